"""Front doors to an actor system: WebSocket, web pages and MQTT."""

"""MQTT for wactorz: one broker connection per actor system, kept alive across outages.

`MQTTConnection` publishes without ever blocking the caller, subscribes with ``+`` and
``#`` filters, and reconnects by itself, re-applying its subscriptions. `Delivery`
says what to keep while the broker is away: only the newest message per topic
(*latest*) or every message in order, up to a bound (*queued*).
"""

from wactorz.interfaces.mqtt.connection import (
    Delivery,
    MQTTConnection,
    MQTTMessage,
    MQTTStatistics,
)

__all__ = ["Delivery", "MQTTConnection", "MQTTMessage", "MQTTStatistics"]

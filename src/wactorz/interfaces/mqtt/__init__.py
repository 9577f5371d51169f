"""MQTT for wactorz: one broker connection per actor system, kept alive across outages.

`MQTTBridge` is the actor that puts an actor system on a broker: it forwards the
monitor's topics, publishes manifests and lifecycle status, serves requests on inbox
topics and mirrors shared topics both ways (see ``docs/mqtt.md``).

`MQTTConnection` publishes without ever blocking the caller, subscribes with ``+`` and
``#`` filters, and reconnects by itself, re-applying its subscriptions. `Delivery`
says what to keep while the broker is away: only the newest message per topic
(*latest*) or every message in order, up to a bound (*queued*).
"""

from wactorz.interfaces.mqtt.bridge import (
    BRIDGE_NAME,
    MQTTBridge,
    MQTTBridgeStatistics,
    delivery_for,
)
from wactorz.interfaces.mqtt.connection import (
    Delivery,
    MQTTConnection,
    MQTTMessage,
    MQTTStatistics,
)

__all__ = [
    "BRIDGE_NAME",
    "Delivery",
    "MQTTBridge",
    "MQTTBridgeStatistics",
    "MQTTConnection",
    "MQTTMessage",
    "MQTTStatistics",
    "delivery_for",
]

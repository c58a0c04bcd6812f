"""The MQTT bridge: the gateway's documented contract with the home hub.

``bridge.MqttBridge`` is what the application wires in: a small façade over its
parts (``link``, ``inlet``, ``backlog``, ``retained``, ``window``, ``health``,
``publisher``; the map is in ``bridge``'s docstring). ``outbox`` is the durable
SQLite queue every event passes through; ``topics`` builds the topic tree and
payloads; ``commands`` validates hub commands; ``discovery`` builds Home
Assistant discovery; ``connection`` builds the paho client. The contract is
documented in ``docs/mqtt.md``.
"""


class MqttSetupError(Exception):
    """The bridge cannot be set up as configured (password source, TLS files, outbox file).

    Raised when the bridge is constructed, before anything runs, with a message
    for the installer that never contains a secret."""

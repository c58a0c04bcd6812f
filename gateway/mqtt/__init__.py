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


def _import_paho() -> None:
    """paho's first import in the process, without loading ``ssl`` and ``urllib.request`` (see
    :mod:`core.lean_imports`): every ``gateway.mqtt`` module imports paho after this package's ``__init__``."""
    from core.lean_imports import DeferredModule, import_deferring

    ssl_errors = ("SSLError", "SSLWantReadError", "SSLWantWriteError", "CertificateError")
    import_deferring("paho.mqtt.client", [DeferredModule("ssl", ssl_errors), DeferredModule("urllib.request")],
                     first=PAHO_IMPORTS)


PAHO_IMPORTS = ("paho.mqtt", "paho.mqtt._packet", "paho.mqtt.enums", "paho.mqtt.matcher", "paho.mqtt.properties",
                "paho.mqtt.reasoncodes", "paho.mqtt.subscribeoptions", "socks", "dns.resolver")
"""What ``paho.mqtt.client`` imports besides the standard library's modules it shares with us (its own
modules, and PySocks and dnspython where installed): imported before ``ssl`` is deferred, so that no module
but paho's client holds the stand-in (a module that kept ``ssl.SSLError`` would never catch the real one)."""


_import_paho()

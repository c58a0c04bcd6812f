"""The MQTT connection's TLS context: apart from :mod:`gateway.mqtt.connection` so that only a gateway
configured with TLS imports ``ssl`` (and OpenSSL with it; :mod:`core.lean_imports`)."""

from __future__ import annotations

import ssl

from gateway.config import TlsSection
from gateway.mqtt import MqttSetupError


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails. paho drops a socket whose handshake raised
    without closing it: a gateway retrying against a wrong certificate for weeks would
    leave a descriptor behind on every attempt until the garbage collector ran."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(tls: TlsSection) -> ssl.SSLContext:
    """A client context: the given CA (or the system's), an optional client certificate, hostname check."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise MqttSetupError(f"mqtt.tls.ca_file {tls.ca_file}: {exc}") from None
    context.sslsocket_class = _ClosingSSLSocket
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise MqttSetupError(f"mqtt.tls.cert_file/key_file {tls.cert_file}: {exc}") from None
    context.check_hostname = tls.check_hostname
    return context

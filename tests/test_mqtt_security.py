"""TLS, client certificates, passwords and ACLs against a real Mosquitto; MQTT 3.1.1 as an option."""

from __future__ import annotations

import logging
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.mqtt import MqttSetupError
from gateway.mqtt.connection import CredentialsError
from tests.conftest import Broker, free_port, mosquitto_binary, wait_for_port
from tests.mqtt_support import make_bridge, make_config, recorder, wait_until

PASSWORD = "s3cret-pa55"


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "30", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt")


def make_cert(directory: Path, ca: str, name: str, cn: str, ext: str) -> None:
    openssl(directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
    (directory / f"{name}.ext").write_text(ext)
    openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.crt")


@dataclass
class SecureBroker:
    directory: Path
    tls_port: int
    password_port: int
    process: subprocess.Popen[bytes] | None = None

    def path(self, name: str) -> Path:
        return self.directory / name


ACL = """\
# each gateway writes only its own tree and its own discovery node, and reads its commands
pattern write gateway/%u/#
pattern read gateway/%u/set/#
pattern write homeassistant/+/%u/#
pattern read homeassistant/status

user hub
topic read gateway/#
topic write gateway/+/set/#
topic readwrite homeassistant/#
"""


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    directory = tmp_path_factory.mktemp("secure")
    make_ca(directory, "ca")
    make_ca(directory, "rogue")
    make_cert(directory, "ca", "server", "localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    make_cert(directory, "ca", "client", "gw-0001", "extendedKeyUsage=clientAuth\n")
    make_cert(directory, "rogue", "rogue-client", "gw-0001", "extendedKeyUsage=clientAuth\n")
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(directory / "pwfile"), "gw-0002", PASSWORD], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(directory / "pwfile"), "hub", "hub-secret"], check=True)
    (directory / "acl").write_text(ACL)
    broker = SecureBroker(directory, free_port(), free_port())
    (directory / "mosquitto.conf").write_text(
        "per_listener_settings true\nuser root\n"
        f"listener {broker.tls_port} 127.0.0.1\n"
        f"cafile {directory}/ca.crt\ncertfile {directory}/server.crt\nkeyfile {directory}/server.key\n"
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
        f"acl_file {directory}/acl\n"
        f"listener {broker.password_port} 127.0.0.1\n"
        f"password_file {directory}/pwfile\nallow_anonymous false\nacl_file {directory}/acl\n"
    )
    with open(directory / "mosquitto.log", "ab") as log:
        broker.process = subprocess.Popen([mosquitto_binary(), "-c", str(directory / "mosquitto.conf")],
                                          stdout=subprocess.DEVNULL, stderr=log)
    wait_for_port(broker.tls_port)
    wait_for_port(broker.password_port)
    yield broker
    broker.process.terminate()
    broker.process.wait(10)


def tls_config(secure: SecureBroker, tmp_path: Path, *, host: str = "localhost", client: str = "client",
               check_hostname: bool = True) -> Any:
    config = make_config("gw-0001", tmp_path / "state", secure.tls_port, tls={
        "ca_file": str(secure.path("ca.crt")), "cert_file": str(secure.path(f"{client}.crt")),
        "key_file": str(secure.path(f"{client}.key")), "check_hostname": check_hostname,
    })
    return config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"host": host})})


def hub_recorder(secure: SecureBroker, *topics: str) -> Any:
    return recorder("127.0.0.1", secure.password_port, *topics, credentials=("hub", "hub-secret"))


def test_tls_with_a_client_certificate_delivers_events(secure: SecureBroker, tmp_path: Path) -> None:
    harness = make_bridge(tls_config(secure, tmp_path))
    with hub_recorder(secure, "gateway/gw-0001/event/#") as hub:
        harness.bridge.start()
        harness.bridge.forward(harness.events.reading("living_temp", 22.0))
        assert hub.wait_for("gateway/gw-0001/event/living_temp")[0].json()["value"] == 22.0
        harness.bridge.stop()


def _outage_message(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.mqtt.link" and r.levelno >= logging.WARNING]
    return lines[0] if lines else ""


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"client": "rogue-client"}, "unknown ca"),  # the broker rejects a certificate from another CA
     ({"host": "127.0.0.1"}, "mismatch")],  # the server certificate names only localhost
)
def test_a_bad_certificate_or_host_name_never_connects_and_says_why(
    secure: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture, kwargs: dict[str, Any], reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.mqtt")
    harness = make_bridge(tls_config(secure, tmp_path, **kwargs))
    harness.bridge.start()
    wait_until(lambda: _outage_message(caplog), what="the outage to be explained")
    harness.bridge.stop()
    assert not harness.bridge.connected and harness.bridge.counters.connects == 0
    assert reason in _outage_message(caplog), _outage_message(caplog)


def test_the_host_name_check_can_be_turned_off_for_an_ip_only_broker(secure: SecureBroker, tmp_path: Path) -> None:
    harness = make_bridge(tls_config(secure, tmp_path, host="127.0.0.1", check_hostname=False))
    harness.bridge.start()
    wait_until(lambda: harness.bridge.connected, what="connection")
    harness.bridge.stop()


def password_config(secure: SecureBroker, tmp_path: Path, **mqtt: Any) -> Any:
    return make_config("gw-0002", tmp_path / "state", secure.password_port, username="gw-0002", **mqtt)


def test_a_password_from_a_file_logs_in_and_is_never_logged(
    secure: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    harness = make_bridge(password_config(secure, tmp_path, password_file=str(tmp_path / "password")))
    harness.bridge.start()
    wait_until(lambda: harness.bridge.connected, what="connection")
    harness.bridge.stop()
    assert PASSWORD not in caplog.text


def test_a_password_from_the_environment_logs_in(
    secure: SecureBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_MQTT_PASSWORD", PASSWORD)
    harness = make_bridge(password_config(secure, tmp_path, password_env="GW_MQTT_PASSWORD"))
    harness.bridge.start()
    wait_until(lambda: harness.bridge.connected, what="connection")
    harness.bridge.stop()


def test_a_wrong_password_gives_a_clear_error_once_without_the_secret(
    secure: SecureBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GW_MQTT_PASSWORD", "wrong-guess")
    harness = make_bridge(password_config(secure, tmp_path, password_env="GW_MQTT_PASSWORD", reconnect_min=1))
    harness.bridge.start()
    wait_until(lambda: "refused the connection" in caplog.text, what="the refusal to be logged")
    assert harness.bridge.health()["connection"] == "refused"
    harness.bridge.stop()
    refusals = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refusals) == 1 and ("password" in refusals[0].lower() or "authori" in refusals[0].lower())
    assert "wrong-guess" not in caplog.text


def test_a_missing_password_source_is_a_clear_error_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="GW_UNSET_VAR is not set"):
        make_bridge(make_config("gw-x", tmp_path / "state", 1, username="u", password_env="GW_UNSET_VAR"))


def test_an_unreadable_certificate_is_a_clear_error_before_anything_runs(tmp_path: Path) -> None:
    config = make_config("gw-y", tmp_path / "state", 1, tls={"ca_file": str(tmp_path / "missing-ca.crt")})
    with pytest.raises(MqttSetupError, match=r"mqtt\.tls\.ca_file .*missing-ca\.crt"):
        make_bridge(config)
    make_bridge(make_config("gw-y", tmp_path / "state", 1)).bridge.stop()  # the outbox was released


def test_the_acl_refuses_a_gateway_writing_into_another_tree_and_the_refusal_is_counted(
    secure: SecureBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_MQTT_PASSWORD", PASSWORD)
    harness = make_bridge(password_config(secure, tmp_path, password_env="GW_MQTT_PASSWORD",
                                          base_topic="gateway/gw-0001"))
    harness.bridge.start()
    harness.bridge.forward(harness.events.reading("living_temp", 1.0))
    wait_until(lambda: harness.bridge.counters.broker_refused == 1, what="PUBACK not authorised")
    wait_until(lambda: harness.bridge.outbox.depth == 0, what="the refused row to leave the outbox")
    harness.bridge.stop()
    assert harness.bridge.counters.events_out == 0


def test_mqtt_3_1_1_can_be_selected(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("v311", tmp_path / "state", broker.port, protocol="3.1.1"))
    with recorder(broker.host, broker.port, "gateway/v311/#") as hub:
        harness.bridge.start()
        harness.bridge.forward(harness.events.reading("living_temp", 3.0))
        assert hub.wait_for("gateway/v311/event/living_temp")[0].json()["value"] == 3.0
        harness.bridge.stop()
    assert "as gateway-v311 (p2, c0" in (broker.directory / "mosquitto.log").read_text()  # 3.1.1, kept session


def test_gateway_run_with_an_unset_password_variable_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import main
    from tests.helpers import write_config

    monkeypatch.delenv("GW_NOT_SET_ANYWHERE", raising=False)
    config = write_config(tmp_path, '[gateway]\nid = "cli-pw"\nstate_dir = "state"\n'
                                    '[mqtt]\nusername = "cli-pw"\npassword_env = "GW_NOT_SET_ANYWHERE"\n')
    assert main(["run", "--config", str(config)]) == 1
    assert "GW_NOT_SET_ANYWHERE is not set" in capsys.readouterr().err


def test_a_gateway_process_loads_tls_only_to_connect_and_comes_online_over_it(
    secure: SecureBroker, tmp_path: Path
) -> None:
    """``gateway run`` imports paho with ``ssl`` deferred (core.lean_imports): TLS still connects and delivers."""
    from tests.faults_support import start_gateway, stop_gateway
    from tests.helpers import write_config

    make_cert(secure.directory, "ca", "lean-client", "gw-lean", "extendedKeyUsage=clientAuth\n")
    config = write_config(tmp_path, textwrap.dedent(f"""\
        [gateway]
        id = "gw-lean"
        state_dir = "state"
        [mqtt]
        host = "localhost"
        port = {secure.tls_port}
        [mqtt.tls]
        ca_file = "{secure.path("ca.crt")}"
        cert_file = "{secure.path("lean-client.crt")}"
        key_file = "{secure.path("lean-client.key")}"
    """))
    with hub_recorder(secure, "gateway/gw-lean/status") as hub:
        process = start_gateway(config, tmp_path / "gateway.log")
        try:
            wait_until(lambda: any(m.payload == b"online" for m in hub.on("gateway/gw-lean/status")), 20,
                       "online over TLS")
            libraries = Path(f"/proc/{process.pid}/maps").read_text()
        finally:
            stop_gateway(process)
    assert "libssl" in libraries

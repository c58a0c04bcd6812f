"""A gateway without TLS never loads OpenSSL (core.lean_imports), and loses nothing for it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.lean_imports import DeferredModule, defer, import_deferring, lazy_package
from tests.conftest import Broker
from tests.faults_support import ROOT, start_gateway, stop_gateway
from tests.helpers import wait_until, write_config


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def run_python(code: str, first_on_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (what it imports is its own); ``first_on_path``: a directory of modules found
    before any other."""
    env = {**os.environ, "PYTHONPATH": f"{first_on_path}:{ROOT}"} if first_on_path is not None else None
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def test_a_running_gateway_without_tls_never_maps_openssl(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[gateway]\nid = "lean-1"\nstate_dir = "state"\n'
                                    f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n')
    log = tmp_path / "gateway.log"
    process = start_gateway(config, log)
    try:
        wait_until(lambda: b"started" in log.read_bytes() or process.poll() is not None, 20, "gateway start")
        assert process.poll() is None, log.read_text()
        libraries = mapped_libraries(process.pid)
    finally:
        stop_gateway(process)
    assert "libpython" in libraries or "python3" in libraries  # the maps were read
    assert "libcrypto" not in libraries
    assert "libssl" not in libraries
    assert "unicodedata" not in libraries  # the broker's name was not spelt with the IDNA codec (GatewayClient)


def test_the_gateway_imports_neither_ssl_nor_urllib_request_nor_importlib_metadata() -> None:
    result = run_python("""
        from core.lean_imports import DeferredModule, prepare_lean_process
        prepare_lean_process()
        import sys
        import gateway.cli, gateway.app, gateway.service, gateway.mqtt.bridge
        from gpiozero import Device, LED
        from gpiozero.pins.mock import MockFactory
        Device.pin_factory = MockFactory()
        LED(17).on()
        print(sorted(name for name in ("ssl", "_hashlib", "urllib.request", "email", "http.client")
                     if name in sys.modules))
        print(type(sys.modules["importlib.metadata"]) is DeferredModule)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_an_alarm_code_is_checked_where_hashlib_was_imported_without_openssl() -> None:
    result = run_python("""
        from core.lean_imports import hashes_without_openssl
        hashes_without_openssl()
        import hashlib, pathlib
        assert not hasattr(hashlib, "scrypt"), "hashlib was imported on OpenSSL"
        assert "libcrypto" not in pathlib.Path("/proc/self/maps").read_text()
        from rules.codes import hash_code, verify_code
        stored = hash_code("1234", n=2**4)
        print(verify_code("1234", stored), verify_code("4321", stored))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


def test_hashes_without_openssl_give_the_same_digests_as_openssl() -> None:
    result = run_python("""
        from core.lean_imports import hashes_without_openssl
        hashes_without_openssl()
        import hashlib, hmac
        print(hashlib.sha256(b"abc").hexdigest(), hmac.new(b"k", b"m", hashlib.sha256).hexdigest())
    """)
    import hashlib
    import hmac

    assert result.returncode == 0, result.stderr
    expected = [hashlib.sha256(b"abc").hexdigest(), hmac.new(b"k", b"m", hashlib.sha256).hexdigest()]
    assert result.stdout.split() == expected


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for modules written by the test; they are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(directory: Path, name: str, body: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


def test_a_deferred_module_is_imported_at_the_first_attribute_the_library_asks_for(module_dir: Path) -> None:
    write_module(module_dir, "lean_heavy", "VALUE = 42\n")
    write_module(module_dir, "lean_library", "import lean_heavy\n\ndef value():\n    return lean_heavy.VALUE\n")
    library = import_deferring("lean_library", [DeferredModule("lean_heavy")])
    assert "lean_heavy" not in sys.modules
    assert library.value() == 42
    assert type(sys.modules["lean_heavy"]) is not DeferredModule


def test_an_exception_of_a_deferred_module_never_matches_until_the_module_is_imported(module_dir: Path) -> None:
    write_module(module_dir, "lean_errors", "class WantRead(Exception):\n    pass\n")
    write_module(module_dir, "lean_reader", """
        import lean_errors

        def read(error):
            try:
                raise error
            except lean_errors.WantRead:
                return "want read"
            except Exception:
                return "other"
    """)
    reader = import_deferring("lean_reader", [DeferredModule("lean_errors", ["WantRead"])])
    assert reader.read(BlockingIOError()) == "other"
    assert "lean_errors" not in sys.modules  # naming the class in an except clause did not import it
    import lean_errors  # type: ignore[import-not-found]

    assert reader.read(lean_errors.WantRead()) == "want read"


def test_a_module_already_imported_is_not_deferred(module_dir: Path) -> None:
    write_module(module_dir, "lean_loaded", "VALUE = 1\n")
    write_module(module_dir, "lean_user", "import lean_loaded\n")
    import lean_loaded  # type: ignore[import-not-found]

    user = import_deferring("lean_user", [DeferredModule("lean_loaded")])
    assert user.lean_loaded is lean_loaded


def test_a_module_deferred_for_the_process_gives_way_to_the_real_one_when_a_function_is_called(
    module_dir: Path,
) -> None:
    write_module(module_dir, "lean_meta", "def entry_points(group):\n    return [group]\n")
    write_module(module_dir, "lean_plugins", """
        from lean_meta import entry_points

        def plugins():
            return entry_points(group="plugins")
    """)
    stand_in = DeferredModule("lean_meta", functions=["entry_points"])
    assert defer(stand_in)
    plugins = importlib.import_module("lean_plugins")
    assert sys.modules["lean_meta"] is stand_in  # taking the function imported nothing
    assert plugins.plugins() == ["plugins"]
    assert type(sys.modules["lean_meta"]) is not DeferredModule


def test_any_other_attribute_of_a_deferred_module_imports_the_real_one(module_dir: Path) -> None:
    write_module(module_dir, "lean_other", "CONSTANT = 7\n")
    stand_in = DeferredModule("lean_other", functions=["entry_points"])
    assert defer(stand_in)
    assert stand_in.CONSTANT == 7
    import lean_other  # type: ignore[import-not-found]

    assert lean_other is not stand_in


def test_a_deferred_module_whose_real_import_uses_another_deferred_module_loads_both(module_dir: Path) -> None:
    write_module(module_dir, "lean_meta2", "def version():\n    return 3\n")
    write_module(module_dir, "lean_heavy2", "from lean_meta2 import version\n\nV = version()\n")
    write_module(module_dir, "lean_user2", "import lean_heavy2\n\ndef get():\n    return lean_heavy2.V\n")
    defer(DeferredModule("lean_meta2"))
    user = import_deferring("lean_user2", [DeferredModule("lean_heavy2")])
    result: list[int] = []
    reader = threading.Thread(target=lambda: result.append(user.get()), daemon=True)
    reader.start()
    reader.join(10)
    assert result == [3], "the nested load hung"


def test_only_paho_keeps_the_ssl_stand_in_even_where_a_library_it_imports_names_ssl(tmp_path: Path) -> None:
    """dnspython (which paho imports where installed) importing ssl inside paho's window would keep the
    stand-in, and its ``ssl.SSLError`` would then never match the real one."""
    (tmp_path / "dns").mkdir()
    (tmp_path / "dns" / "__init__.py").write_text("")
    (tmp_path / "dns" / "resolver.py").write_text("import ssl\nERRORS = (ssl.SSLError, ConnectionError)\n")
    result = run_python("""
        from core.lean_imports import DeferredModule, prepare_lean_process
        prepare_lean_process()
        import sys
        import gateway.mqtt
        import dns.resolver
        print(sorted(name for name, module in list(sys.modules.items())
                     if any(isinstance(v, DeferredModule) and v.__name__ in ("ssl", "urllib.request")
                            for v in vars(module).values())))
        import ssl
        print(dns.resolver.ERRORS[0] is ssl.SSLError)
    """, first_on_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["['urllib']", "True"]


def test_where_python_has_no_builtin_sha256_hashlib_is_imported_on_openssl() -> None:
    result = run_python("""
        import sys
        for name in ("_sha256", "_sha2", "_sha1"):
            sys.modules[name] = None  # as a Python built with BLAKE2 only
        from core.lean_imports import hashes_without_openssl
        hashes_without_openssl()
        import hashlib, hmac
        print(hashlib.sha256(b"abc").hexdigest()[:8], hmac.new(b"k", b"m", "sha256").hexdigest()[:8])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ba7816bf", "b60090e3"]


def write_package(directory: Path, name: str) -> None:
    """A package whose ``__init__`` imports a heavy module and re-exports a submodule's name (gpiozero's shape)."""
    (directory / name).mkdir()
    (directory / name / "__init__.py").write_text("import lean_board\nfrom .devices import Relay\n")
    (directory / name / "devices.py").write_text("class Relay:\n    pass\n")
    write_module(directory, "lean_board", "BOARDS = 40\n")


def test_a_lazy_packages_submodule_is_imported_without_running_the_packages_init(module_dir: Path) -> None:
    write_package(module_dir, "lean_pins")
    assert lazy_package("lean_pins")
    from lean_pins.devices import Relay  # type: ignore[import-not-found]

    assert Relay.__name__ == "Relay"
    assert "lean_board" not in sys.modules


def test_a_name_asked_of_a_lazy_package_runs_its_init_once_and_gives_the_same_object(module_dir: Path) -> None:
    write_package(module_dir, "lean_pins")
    lazy_package("lean_pins")
    from lean_pins.devices import Relay

    assert importlib.import_module("lean_pins").Relay is Relay
    assert "lean_board" in sys.modules
    assert "__getattr__" not in vars(sys.modules["lean_pins"])  # a missing name now fails as usual
    with pytest.raises(AttributeError):
        sys.modules["lean_pins"].Missing  # noqa: B018


def test_a_package_already_imported_is_not_made_lazy(module_dir: Path) -> None:
    write_package(module_dir, "lean_pins")
    importlib.import_module("lean_pins")
    assert not lazy_package("lean_pins")


def test_a_star_import_of_a_lazy_package_runs_its_init_and_takes_every_name_a_plain_import_gives(
        module_dir: Path) -> None:
    # `from package import *` asks the package for `__all__` only, then reads its namespace: before the fix it
    # took the submodules bound so far and none of the names `__init__` binds, without a word
    write_package(module_dir, "lean_pins")
    lazy_package("lean_pins")
    namespace: dict[str, object] = {}
    exec("from lean_pins import *", namespace)

    assert "Relay" in namespace
    assert "lean_board" in sys.modules

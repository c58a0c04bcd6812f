"""Importing the libraries the gateway needs without the modules it never uses: OpenSSL, importlib.metadata.

Why: on a board whose budget is 40 MB (issue 14), libraries import at their top modules that only some of
their paths use, and a resident page of them costs as much as one of ours:

* ``hashlib`` and ``hmac`` load ``_hashlib`` (OpenSSL's ``libcrypto``, the largest library the process maps:
  3 to 4 MB resident once initialised) when first imported. pydantic imports them (through ``secrets``), paho
  imports ``hashlib`` (for the WebSocket handshake), and the gateway hashes its id and its rule fingerprints.
  CPython's built-in SHA-1, SHA-2, MD5 and BLAKE2 serve all of these, as in a Python built without OpenSSL.
  :func:`hashes_without_openssl` imports both modules that way; ``_hashlib`` itself stays importable,
  loaded at first use by what needs OpenSSL only (``rules.codes`` takes ``scrypt`` from it when an alarm
  code is checked).
* paho imports ``ssl`` (for TLS) and ``urllib.request`` (for a proxy named in the environment, read only
  when PySocks is installed) at its top, and ``urllib.request`` brings ``http.client`` and ``email`` with it.
  ``gateway.mqtt`` imports paho through :func:`import_deferring` with both replaced by a :class:`DeferredModule`,
  which imports the real module at the first attribute paho asks of it: ``tls_set_context`` on a gateway with
  TLS, which pays for ``ssl`` then.
* pydantic's plugin loader and gpiozero's pin factories take ``entry_points`` from ``importlib.metadata``
  (with ``email``, ``zipfile`` and ``csv``: 1.3 MB) to look up plugins in the installed distributions; the
  gateway names its pin factory itself and uses no pydantic plugin (``PYDANTIC_DISABLE_PLUGINS`` is set).
  :func:`prepare_lean_process` puts a :class:`DeferredModule` in its place until something really calls it.

* gpiozero's ``__init__`` imports every device class it has (the boards, the SPI chips, the Pi's internal
  devices): 42 M instructions, 4 % of a start to READY, where a house uses a relay and an input or two.
  :func:`lazy_package` installs the package without running its ``__init__``; the drivers import their
  classes from gpiozero's submodules, and the first name asked of the package itself runs its ``__init__``.
  ``colorzero`` (gpiozero's output devices import its ``Color`` for the RGB LED, which no driver of ours
  drives) waits behind a :class:`DeferredModule` until a colour is made.

* Not an import, but the same kind of waste: ``@dataclass`` writes each class's methods as text and compiles
  them at every start (17 % of the instructions to READY). :func:`cache_generated_methods` keeps their code
  in the bytecode cache directory, when the process has one (:class:`GeneratedCode`), with the code of the
  forward references ``typing`` compiles for every string annotation.

Where a Python has no built-in SHA-256 (built with BLAKE2 only, as some distributions do), hashlib is
imported on OpenSSL as usual. Some paths still load what is deferred, and pay for it then: TLS (``ssl``),
the web page (``[web] enabled``: ``http.server``, ``ssl``), the first alarm code checked (``_hashlib``), a
rule with a schedule (APScheduler asks ``importlib.metadata`` for its version at import).

Measured on the bench house: docs/performance.md, *What a gateway without TLS does not load (issue 14)*.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import marshal
import os
import sys
import threading
import typing
from collections.abc import Iterable
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

OPENSSL_HASHES = "_hashlib"
"""The C module that backs hashlib and hmac with OpenSSL (and the only home of ``scrypt``)."""

_swap = threading.Lock()
"""Held while a stand-in is replaced by its real module (two threads could ask at once)."""


def prepare_lean_process() -> None:
    """All of the below, for a process that has imported nothing yet: the ``gateway`` command's first call."""
    hashes_without_openssl()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    defer(DeferredModule("importlib.metadata", functions=["entry_points"]))
    lazy_package("gpiozero")
    defer(DeferredModule("colorzero", functions=["Color"]))
    cache_generated_methods()


def hashes_without_openssl() -> None:
    """Import ``hashlib`` and ``hmac`` on CPython's built-in hashes, unless the process already imported them.

    Call it first thing in a process's entry point: whatever imports them first decides for the whole
    process. ``_hashlib`` is importable again on return."""
    missing = [name for name in ("hashlib", "hmac") if name not in sys.modules]
    if not missing or OPENSSL_HASHES in sys.modules:
        return
    sys.modules[OPENSSL_HASHES] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        for name in missing:
            importlib.import_module(name)
    finally:
        del sys.modules[OPENSSL_HASHES]
    if not _builtin_hashes_serve():
        for name in missing:  # nothing else has them yet: imported again, on OpenSSL
            del sys.modules[name]
        for name in missing:
            importlib.import_module(name)


BUILTIN_HASHES_NEEDED = ("sha256", "sha1")
"""SHA-256: the gateway's id, rule fingerprints, the web page's sessions; SHA-1: paho's WebSocket handshake."""


def _builtin_hashes_serve() -> bool:
    """Whether this Python has its own code for the hashes the gateway uses (some distributions build it with
    BLAKE2 only, leaving the rest to OpenSSL)."""
    import hashlib

    try:
        for name in BUILTIN_HASHES_NEEDED:
            hashlib.new(name)
    except ValueError:
        return False
    return True


class _NeverRaised(Exception):
    """Stands for an exception class of a module not imported yet: nothing can raise it, so it never matches."""


class DeferredModule(ModuleType):
    """A stand-in for a module libraries import at their top but use only on paths the gateway may never take.

    Any attribute imports the real module (which then replaces the stand-in in ``sys.modules``) and is read
    from it. The names in ``unraisable`` (exception classes a library names in ``except`` clauses on its hot
    path, e.g. ``ssl.SSLWantReadError`` around every socket read) give :class:`_NeverRaised` while the real
    module is not imported: no object of that module exists yet, so none of its exceptions can be raised.
    The names in ``functions`` (functions a library takes with ``from module import name``, which reads the
    attribute at once) give a function that imports the module when it is called, and calls the real one.

    A stand-in is no package: a submodule cannot be imported while it is in ``sys.modules``, ``from module
    import *`` takes nothing, and ``importlib.util.find_spec`` raises ValueError (its ``__spec__`` is None, so
    that the import system's own questions do not load the module)."""

    def __init__(self, name: str, unraisable: Iterable[str] = (), functions: Iterable[str] = ()) -> None:
        super().__init__(name)
        self._unraisable = frozenset(unraisable)
        self._functions = frozenset(functions)

    def __getattr__(self, attribute: str) -> object:
        if attribute.startswith("__"):
            raise AttributeError(attribute)  # the import system's questions must not load the module
        if attribute in self._unraisable and not self.loaded():
            return _NeverRaised
        if attribute in self._functions:
            return functools.partial(_call_real, self, attribute)
        return getattr(self.real(), attribute)

    def loaded(self) -> bool:
        return sys.modules.get(self.__name__, self) is not self

    def real(self) -> ModuleType:
        """The real module, imported now if it is not yet. The stand-in leaves ``sys.modules`` under a lock
        (two threads could ask at once: neither may remove the real module the other just imported); the
        import runs outside it, serialised by the import system's own per-module lock."""
        with _swap:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
        return importlib.import_module(self.__name__)


def _call_real(module: DeferredModule, function: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(module.real(), function)(*args, **kwargs)


def defer(module: DeferredModule) -> bool:
    """Put ``module`` in ``sys.modules`` in place of the module it stands for, unless that one is imported;
    whether it was put. The real module replaces it at its first use (:class:`DeferredModule`)."""
    if module.__name__ in sys.modules:
        return False
    sys.modules[module.__name__] = module
    package, _, child = module.__name__.rpartition(".")
    if package and not hasattr(parent := importlib.import_module(package), child):
        # `import urllib.request` binds `urllib`: a library reaches the stand-in as the package's attribute,
        # which a real import of the module replaces
        setattr(parent, child, module)
    return True


def import_deferring(name: str, deferred: Iterable[DeferredModule], first: Iterable[str] = ()) -> ModuleType:
    """Import ``name`` with each of ``deferred`` standing in for its module, unless that module is imported.

    The stand-ins are in ``sys.modules`` only during this import: any later import of those modules gets the
    real one, and the stand-ins the library kept forward to it. Any module imported for the first time during
    the import sees them too, and would keep one: ``first`` names the modules ``name`` imports (optional ones
    included: an ImportError is ignored), imported before the stand-ins are put, so that only ``name`` holds
    them."""
    if name in sys.modules:
        return sys.modules[name]
    for module_name in first:
        with contextlib.suppress(ImportError):
            importlib.import_module(module_name)
    placed = [module for module in deferred if defer(module)]
    try:
        return importlib.import_module(name)
    finally:
        for module in placed:
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]


def lazy_package(name: str) -> bool:
    """Put the package ``name`` in ``sys.modules`` without running its ``__init__``, unless it is imported;
    whether it was put.

    Its submodules import as usual (the package's ``__path__`` is set), so ``from gpiozero.output_devices
    import OutputDevice`` imports that module and what it needs only. The first name asked of the package
    that no submodule import has bound (``from gpiozero import Factory``, ``gpiozero.MCP3008``) runs the
    real ``__init__`` in the package's namespace, once, under a lock: from then on the package is the one a
    plain import gives, and a name it lacks raises AttributeError as usual. Names in double underscores are
    the import system's questions: they never run it, but ``__all__``, which only ``from package import *``
    (and documentation tools) ask, and which must find every name ``__init__`` binds."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    lock = threading.RLock()
    running: list[bool] = []  # the thread running __init__ may ask for a name it has not bound yet

    def __getattr__(attribute: str) -> object:
        if not attribute.startswith("__") or attribute == "__all__":
            with lock:
                if vars(package).get("__getattr__") is __getattr__ and not running:
                    running.append(True)
                    try:
                        loader.exec_module(package)
                        del vars(package)["__getattr__"]
                    finally:
                        running.clear()
            with contextlib.suppress(KeyError):
                return vars(package)[attribute]
        raise AttributeError(f"module {name!r} has no attribute {attribute!r}")

    vars(package)["__getattr__"] = __getattr__
    sys.modules[name] = package
    return True


# -- the methods dataclasses write, compiled once per install -------------------------------------------------

GENERATED_CODE = "gateway-dataclass-methods"
"""The cache file's name in the bytecode cache directory (``sys.pycache_prefix``), before its tags."""

FORWARD_REFERENCE = "\x00eval\x00"
"""Before a forward reference's text in the cache file: an expression's code is not a method's text's."""

_generated: dict[str, GeneratedCode] = {}
"""The process's cache while its start runs (under ``"start"``)."""


class GeneratedCode:
    """The code of the methods :mod:`dataclasses` writes as source text and compiles at every class creation.

    Why: ``@dataclass`` writes ``__init__``, ``__repr__``, ``__eq__`` (and ``__setattr__``, ``__delattr__``,
    ``__hash__`` when frozen) as text and ``exec``s each one: about 500 texts in a start of the gateway (ours,
    pydantic's, annotated_types'), parsed and compiled at every start: 17 % of the instructions to READY
    (docs/performance.md, *Start → READY*, 2 Dec 2026). The text of a class's method is the same at every start
    of an install, so its code is kept, as the bytecode of a module is: a file of ``{text: code}`` in the
    bytecode cache directory, read when the process starts, written when its start is over if the process
    compiled a text the file did not have (an upgrade, a changed class). The file then holds the texts this
    start used, so it never grows with versions.

    How: :mod:`dataclasses` calls ``exec(text, globals, namespace)``; its module gets an ``exec`` of its own
    (a global of the module comes before the builtin) that runs the cached code for a known text, and compiles
    the others as ``exec`` would (``<string>``, no ``__future__`` flags of ours, the interpreter's ``-O`` level).
    Anything but a text goes to the builtin. Nothing of dataclasses' private functions is used, so a Python
    whose dataclasses write fewer texts (3.13 writes one per class) is served the same way. The file starts
    with the bytecode's magic number, as a .pyc does: another interpreter's file is ignored; then the CRC-32
    of the rest: a damaged file is ignored. A file that cannot be read or unmarshalled is ignored (the texts
    are compiled); one that cannot be written is not written (:func:`save_generated_methods` says nothing: the
    next start compiles again)."""

    def __init__(self, path: Path, known: dict[str, CodeType]) -> None:
        self.path = path
        self._known = known
        self.used: dict[str, CodeType] = {}
        self.compiled = 0

    def exec(self, source: object, globals: dict[str, Any] | None = None,
             locals: dict[str, Any] | None = None) -> None:
        if not isinstance(source, str):
            exec(source, globals, locals)  # type: ignore[arg-type]  # noqa: S102
            return
        code = self._known.get(source)
        if code is None:
            code = compile(source, "<string>", "exec", dont_inherit=True)
            self.compiled += 1
        self.used[source] = code
        exec(code, globals, locals)  # noqa: S102

    def compile(self, source: Any, filename: Any, mode: str, flags: int = 0,  # noqa: PLR0917  # the builtin's
                dont_inherit: bool = False, optimize: int = -1) -> Any:
        """``typing``'s ``compile``: the code of a forward reference's text (``ForwardRef("str | None")``),
        kept as a method's is. Every string annotation that ``typing`` or pydantic meets becomes one, each
        compiled at creation: 1,130 in a start of the bench house (pydantic_core's ~100 schema TypedDicts,
        our models), 321 distinct texts. A code object is immutable: references to one text share it.
        Anything but an expression's text goes to the builtin. ``dont_inherit=True`` either way: ``typing``
        has no ``__future__`` flags, and ours must not reach what it compiles."""
        if not (isinstance(source, str) and filename == "<string>" and mode == "eval" and not flags
                and optimize == -1):
            return compile(source, filename, mode, flags, dont_inherit=True, optimize=optimize)
        key = FORWARD_REFERENCE + source
        code = self.used.get(key) or self._known.get(key)
        if code is None:
            code = compile(source, "<string>", "eval", dont_inherit=True)
            self.compiled += 1
        self.used[key] = code
        return code

    def save(self) -> bool:
        """Write what this process used, if it compiled anything; whether it wrote."""
        if not self.compiled:
            return False
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            payload = marshal.dumps(self.used)
            temporary.write_bytes(_bytecode_magic() + _checksum(payload) + payload)
            os.replace(temporary, self.path)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                temporary.unlink()
            return False
        return True


def generated_methods_file() -> Path | None:
    """Where this interpreter keeps the cache: in ``sys.pycache_prefix`` (the unit sets one, writable by the
    service: docs/service.md), tagged with the interpreter and its ``-O`` level as bytecode is; None without a
    prefix (a development tree, or a venv the service may not write to)."""
    if not sys.pycache_prefix or sys.implementation.cache_tag is None:
        return None
    return Path(sys.pycache_prefix) / f"{GENERATED_CODE}.{sys.implementation.cache_tag}.opt{sys.flags.optimize}"


def cache_generated_methods(path: Path | None = None) -> GeneratedCode | None:
    """Serve :mod:`dataclasses`' texts from the cache file (:class:`GeneratedCode`) until
    :func:`save_generated_methods`; None (nothing done) without a place for the file, or if done already."""
    path = path or generated_methods_file()
    if path is None or _generated:
        return None
    import dataclasses

    generated = _generated["start"] = GeneratedCode(path, _read_generated(path))
    dataclasses.exec = generated.exec  # type: ignore[attr-defined]
    typing.compile = generated.compile  # type: ignore[attr-defined]
    return generated


def _read_generated(path: Path) -> dict[str, CodeType]:
    magic = _bytecode_magic()
    try:
        data = path.read_bytes()
        if not data.startswith(magic):  # another interpreter's bytecode (the same cache tag): never run it
            return {}
        checksum, payload = data[len(magic):len(magic) + 4], data[len(magic) + 4:]
        if checksum != _checksum(payload):  # damaged (a bad block, a power cut): never run what it became
            return {}
        known = marshal.loads(payload)  # noqa: S302  # trusted as the .pyc files beside it are
    except Exception:  # a damaged file: marshal raises more than EOF, Value and TypeError (SystemError)
        return {}
    if not isinstance(known, dict):
        return {}
    return {text: code for text, code in known.items() if isinstance(text, str) and isinstance(code, CodeType)}


def _bytecode_magic() -> bytes:
    """The file's first bytes: the bytecode's magic number, as a .pyc starts with. Why: the cache tag in the
    file's name stays the same across an upgrade of the interpreter within a version (3.11.x), whose bytecode
    may still change; the import system then recompiles the .pyc files, and this file must be ignored too."""
    import importlib.util

    return importlib.util.MAGIC_NUMBER


def _checksum(payload: bytes) -> bytes:
    """What follows the magic number: the CRC-32 of the marshalled code. Why: a damaged file often still
    unmarshals, into code other than its text's (a name in it changed), which would then run at every start."""
    import zlib

    return zlib.crc32(payload).to_bytes(4, "little")


def save_generated_methods() -> bool:
    """The start is over: write the cache if this process compiled a text it lacked (whether it wrote), and
    give :mod:`dataclasses` the builtin ``exec`` again (a class made later compiles its methods, as usual)."""
    generated = _generated.pop("start", None)
    if generated is None:
        return False
    import dataclasses

    if getattr(dataclasses, "exec", None) == generated.exec:
        del dataclasses.exec  # type: ignore[attr-defined]
    if getattr(typing, "compile", None) == generated.compile:
        del typing.compile  # type: ignore[attr-defined]
    return generated.save()

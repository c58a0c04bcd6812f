"""The ``gateway`` command's entry point (``python -m gateway`` and the installed script).

Its one job before :mod:`gateway.cli`: import, while nothing has imported them yet, ``hashlib`` and
``hmac`` on CPython's own hashes and pydantic without ``importlib.metadata``
(:func:`core.lean_imports.prepare_lean_process`): OpenSSL stays out of a gateway without TLS, and
1.3 MB of modules it never uses out of every one."""

import sys

from core.lean_imports import prepare_lean_process


def main() -> int:
    prepare_lean_process()
    from gateway.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

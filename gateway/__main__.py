"""The ``gateway`` command's entry point (``python -m gateway`` and the installed script).

Its jobs before :mod:`gateway.cli`: import, while nothing has imported them yet, ``hashlib`` and
``hmac`` on CPython's own hashes and pydantic without ``importlib.metadata``
(:func:`core.lean_imports.prepare_lean_process`): OpenSSL stays out of a gateway without TLS, and
1.3 MB of modules it never uses out of every one.

It also starts the command with the cyclic garbage collector paused (:func:`gateway.cli.main` resumes it):
the imports and the validators built at start allocate hundreds of thousands of objects, nearly all of them
living as long as the process, and the collector would run about ninety times over them before ``READY=1``
(3 % of the CPU to READY on the bench house, docs/performance.md). ``run`` resumes it once its start has
frozen what it built; every other command resumes it before it runs, except ``check``, whose work is
bounded and ends with the process."""

import gc
import sys

from core.lean_imports import prepare_lean_process


def main() -> int:
    prepare_lean_process()
    gc.disable()  # resumed by gateway.cli.main: see the module's docstring
    from gateway.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

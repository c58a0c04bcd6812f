"""``python -m bench.nomqtt CONFIG``: ``gateway run`` without the MQTT bridge, for trees that lack it.

Same ``Gateway``, same start, loop and shutdown as ``gateway.cli``; only the
forwarder is absent. Benchmarks say so next to every figure taken this way.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from gateway.app import Gateway
from gateway.config import load_config
from gateway.logs import setup_logging


def main(config: str) -> int:
    setup_logging("INFO")
    gateway = Gateway(load_config(Path(config)), mqtt=False)
    signal.signal(signal.SIGTERM, lambda signum, frame: gateway.request_stop())
    signal.signal(signal.SIGINT, lambda signum, frame: gateway.request_stop())
    try:
        gateway.start()
        gateway.run()
    finally:
        gateway.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

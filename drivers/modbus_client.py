"""pymodbus's synchronous RTU client, opened through the gateway's serial seam; imported only by a started line.

Why pymodbus (3.x) and not minimalmodbus: it is the maintained, typed
(``py.typed``) Modbus implementation with RTU, ASCII and TCP framing, 32-bit
and float conversions and exception responses, and it already was in the
gateway's environment; minimalmodbus is smaller but RTU/ASCII only, untyped,
and would bind ``serial.Serial`` directly. pymodbus's sync serial client
opens its port with ``serial.serial_for_url``; :class:`OpenedClient` opens it
with the :class:`~drivers.base.DriverContext`'s ``open_serial`` instead, so
``--simulate`` (a pty), tests and ``socket://`` ports work unchanged.

pymodbus writes an ERROR line for every request that got no answer; a slave
that is off would write one every poll. The line logs each outage once
(:class:`core.logonce.LogOnce`) and counts the rest, so pymodbus's own logger
is kept to CRITICAL here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pymodbus.client import ModbusSerialClient

from drivers.base import SerialOpener

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


class OpenedClient(ModbusSerialClient):
    """A :class:`ModbusSerialClient` whose port comes from ``open_serial``; ``open_error`` says why it did not."""

    def __init__(self, port: str, open_serial: SerialOpener, *, on_packet: Callable[[bool, bytes], bytes],
                 framing: bool = True, **kwargs: Any) -> None:
        """``framing=False`` (``--simulate``): open without the line's parity and stop bits. The twin is a
        pseudo-terminal, which frames no bits, and Linux refuses even parity on one (EINVAL)."""
        super().__init__(port, trace_packet=on_packet, retries=0, **kwargs)
        self._open_serial = open_serial
        self._framing = framing
        self.open_error: str | None = None

    def connect(self) -> bool:
        if self.socket:
            return True
        params = self.comm_params
        try:
            framing = {"bytesize": params.bytesize, "parity": params.parity, "stopbits": params.stopbits}
            self.socket = self._open_serial(  # type: ignore[assignment]
                params.host, baudrate=params.baudrate, timeout=params.timeout_connect,
                write_timeout=params.timeout_connect, **(framing if self._framing else {}),
            )
            assert self.socket is not None
            self.socket.inter_byte_timeout = self.inter_byte_timeout
            self.open_error = None
        except Exception as exc:  # pyserial raises SerialException, OSError, termios errors
            self.open_error = str(exc)
            self.close()
        return self.socket is not None

    def _wait_for_data(self) -> int:
        """pymodbus 3.x's wait for an answer (``ModbusSerialClient._wait_for_data``, called by ``recv``), step for
        step, timed by the monotonic clock. pymodbus times it by the wall clock, so a clock stepped back during a
        transaction (NTP correcting a boot on a saved time) kept the line waiting for the length of the step, and
        with it every thread that waits for the line (the dispatcher's writes to a slave).
        tests/test_modbus_clock_step.py fails if pymodbus stops calling it."""
        size = 0
        more_data = False
        deadline = time.monotonic() + self.comm_params.timeout_connect
        while time.monotonic() <= deadline:
            available = self._in_waiting()  # type: ignore[no-untyped-call]
            if (more_data and not available) or (more_data and available == size):
                break
            if available and available != size:
                more_data = True
                size = available
            time.sleep(self._recv_interval)
        return size

    def close(self) -> None:
        super().close()  # type: ignore[no-untyped-call]

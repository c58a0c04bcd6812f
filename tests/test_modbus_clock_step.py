"""A Modbus transaction's wait for an answer is timed by the monotonic clock: a wall clock stepped back meanwhile
(NTP correcting a boot on a saved time) does not keep the line, and the dispatcher waiting for it, busy for the
length of the step. A real pseudo-terminal where no slave answers; the wall clock stepped with time-machine."""

from __future__ import annotations

import inspect
import os
import threading
import time
from typing import Any

import serial
import time_machine
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from drivers.modbus_client import OpenedClient

STEP = 3600.0


def test_pymodbus_still_waits_for_an_answer_through_the_method_the_client_times_itself() -> None:
    assert "self._wait_for_data()" in inspect.getsource(ModbusSerialClient.recv)


def test_a_wall_clock_stepped_back_during_a_transaction_does_not_prolong_its_timeout() -> None:
    master, slave = os.openpty()
    client = OpenedClient(os.ttyname(slave), serial.serial_for_url, on_packet=lambda sending, data: data,
                          baudrate=9600, timeout=0.3)
    outcome: list[Any] = []

    def transaction() -> None:
        try:
            outcome.append(client.read_holding_registers(0, count=1, device_id=7))  # nobody answers
        except ModbusException as exc:
            outcome.append(exc)

    try:
        assert client.connect()
        worker = threading.Thread(target=transaction, daemon=True)
        started = time.monotonic()
        worker.start()
        time.sleep(0.1)  # the transaction is waiting for its answer now
        with time_machine.travel(time.time() - STEP, tick=True):
            worker.join(5)
            took = time.monotonic() - started
        assert not worker.is_alive(), "the wait ran on the stepped wall clock"
        assert outcome and took < 2
    finally:
        client.close()
        os.close(master)
        os.close(slave)

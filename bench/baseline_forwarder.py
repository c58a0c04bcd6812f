"""``python -m bench.baseline_forwarder PORT HOST MQTT_PORT TOPIC``: the least a serial->MQTT gateway can do.

A minimal pyserial -> paho-mqtt QoS 1 forwarder, written as anyone would on a
first afternoon: read a line, publish it, no rules, no outbox, paho defaults.
Benchmark 3 runs it beside the gateway so that figures compare as ratios.
"""

from __future__ import annotations

import signal
import sys

import paho.mqtt.client as mqtt
import serial


def main(port: str, host: str, mqtt_port: int, topic: str) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="baseline-forwarder")
    client.connect(host, mqtt_port)
    client.loop_start()
    link = serial.serial_for_url(port, baudrate=115200, timeout=None)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print("ready", flush=True)
    try:
        while True:
            line = link.readline()
            if line:
                client.publish(topic, line.strip(), qos=1)
    finally:
        client.loop_stop()
        client.disconnect()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))

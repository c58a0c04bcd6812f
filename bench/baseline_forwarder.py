"""``python -m bench.baseline_forwarder PORT HOST MQTT_PORT TOPIC [ALARM]``: the least a serial->MQTT gateway can do.

A minimal pyserial -> paho-mqtt QoS 1 forwarder, written as anyone would on a
first afternoon: read a line, publish it, no rules engine, no outbox, paho defaults.
Benchmark 3 runs it beside the gateway so that figures compare as ratios. With
``ALARM`` (a topic) (benchmark 11, issue 14's workload) a line whose ``temp=`` is
over 25.0 is also published there: the same messages per line as the gateway's rule.
"""

from __future__ import annotations

import signal
import sys

import paho.mqtt.client as mqtt
import serial


def main(port: str, host: str, mqtt_port: int, topic: str, alarm_topic: str | None = None) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="baseline-forwarder")
    client.connect(host, mqtt_port)
    client.loop_start()
    link = serial.serial_for_url(port, baudrate=115200, timeout=None)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print("ready", flush=True)
    try:
        while True:
            line = link.readline().strip()
            if line:
                client.publish(topic, line, qos=1)
                if alarm_topic is not None and float(line.rpartition(b"temp=")[2] or 0) > 25.0:
                    client.publish(alarm_topic, line, qos=1)
    finally:
        client.loop_stop()
        client.disconnect()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:6]))

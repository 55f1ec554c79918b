"""A stand-in appliance for kill tests: ``python -m tests.edge.mqtt.publisher_proc CFG STATE N``.

Opens an MqttSink with the JSON config CFG, publishes batches 1..N (starting at
``--first``), prints ``QUEUED <n>`` and then ``CONNECTED`` once connected (if ever), and
waits to be killed (or exits after closing with ``--close``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from edge.mqtt.config import MqttConfig
from edge.mqtt.sink import MqttSink
from tests.edge.mqtt.conftest import fake_report


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("state_dir")
    ap.add_argument("n", type=int)
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--close", action="store_true")
    args = ap.parse_args()
    sink = MqttSink(MqttConfig(**json.loads(args.config)), state_dir=args.state_dir)
    sink.open()
    for i in range(args.first, args.first + args.n):
        sink.publish(fake_report(i))
    print(f"QUEUED {args.n}", flush=True)
    announced = False
    while True:
        if not announced and sink.health()["connected"]:
            print("CONNECTED", flush=True)
            announced = True
        if args.close and announced and sink.health()["outbox_depth"] == 0:
            sink.close()
            print("CLOSED", flush=True)
            return 0
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())

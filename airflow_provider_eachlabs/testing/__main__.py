"""Run the simulator as a process, for demos and for clients that cannot share our interpreter."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_eachlabs.testing.server import EachlabsSimulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_eachlabs.testing", description="Serve the Eachlabs API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", help="accepted key (repeatable; default sim-key)"
    )
    parser.add_argument("--predict-seconds", type=float, default=9.0)
    parser.add_argument("--max-in-flight", type=int, default=10)
    parser.add_argument("--creates-per-minute", type=int, default=100)
    parser.add_argument("--balance", type=float, default=None)
    parser.add_argument(
        "--mask-required",
        action="store_true",
        help="refuse a flux-fill-pro input without a mask (the model page's stricter reading)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sim = EachlabsSimulator(
        api_key=args.api_keys or "sim-key",
        predict_seconds=args.predict_seconds,
        host=args.host,
        port=args.port,
        max_in_flight=args.max_in_flight,
        creates_per_minute=args.creates_per_minute,
        balance=args.balance,
        mask_required=args.mask_required,
    )
    with sim:
        print(f"Eachlabs simulator listening on {sim.base_url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

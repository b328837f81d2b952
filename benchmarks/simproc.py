"""The bundled simulator in its own process, with the extra bookkeeping the benchmarks need.

Why a wrapper and not the plain CLI: the benchmarks must read the simulator's counters from another
process (so that the simulator's CPU is never counted as the client's), count the TCP connections
clients opened, count GETs per prediction, and seed thousands of predictions with chosen end times
without thousands of creates. None of that changes the simulator's HTTP behaviour: the wrapper only
observes requests (an ASGI wrapper around the simulator's own middleware) and inserts records the
way a create would.

Protocol: the process prints ``READY <base_url>`` on stdout, then answers one JSON line per command
line read from stdin: ``{"cmd": "stats"}``, ``{"cmd": "reset"}``,
``{"cmd": "seed", "ends_at": [epoch, ...], "created_at": [epoch, ...]}`` (answers the new ids) and
``{"cmd": "quit"}``. :class:`SimProcess` is the client side.

    python benchmarks/simproc.py --api-key K [--max-in-flight N] [--creates-per-minute N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREDICTION_PREFIX = "/v1/prediction/"


class _Observed:
    """What the ASGI wrapper saw: client sockets (one per TCP connection) and GETs per prediction."""

    def __init__(self) -> None:
        self.clients: set[tuple[str, int]] = set()
        self.gets_by_id: Counter[str] = Counter()
        self.status_by_code: Counter[int] = Counter()

    def reset(self) -> None:
        self.clients.clear()
        self.gets_by_id.clear()
        self.status_by_code.clear()


def _install_observer(observed: _Observed) -> None:
    """Wrap the simulator's middleware; ``EachlabsSimulator.start`` imports it by name at start."""
    from airflow_provider_eachlabs.testing import middleware

    original = middleware.SimulatorMiddleware

    class ObservingMiddleware(original):  # type: ignore[misc,valid-type]
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                client = scope.get("client")
                if client:
                    observed.clients.add((client[0], client[1]))
                path = scope.get("path", "")
                if scope.get("method") == "GET" and path.startswith(PREDICTION_PREFIX):
                    observed.gets_by_id[path[len(PREDICTION_PREFIX) :]] += 1

                async def counting_send(message: Any) -> None:
                    if message.get("type") == "http.response.start":
                        observed.status_by_code[int(message["status"])] += 1
                    await send(message)

                await super().__call__(scope, receive, counting_send)
                return
            await super().__call__(scope, receive, send)

    middleware.SimulatorMiddleware = ObservingMiddleware  # type: ignore[misc]


def _seed(sim: Any, key: str, ends_at: Sequence[float], created_at: Sequence[float]) -> list[str]:
    """Insert finished-at-a-chosen-time echo predictions as a create would, past the caps.

    The setup of 5,000 waits must not take 5,000 creates (the caps forbid it and the create check is
    linear in the predictions held), and each needs its own end time, which the simulator's single
    ``predict_seconds`` cannot give. Status is derived from ``started + predict_seconds`` on every
    GET exactly as for created predictions.
    """
    import time as _time

    from airflow_provider_eachlabs.testing.state import PredictionRecord

    state = sim._state
    ids: list[str] = []
    now_wall, now_mono = _time.time(), _time.monotonic()
    for end, created in zip(ends_at, created_at, strict=True):
        rec = PredictionRecord(
            id=str(uuid.uuid4()),
            model="echo-test",
            input={"prompt": "benchmark"},
            api_key=key,
            created_at=created,
            predict_seconds=max(0.0, end - created),
            cost=0.0,
        )
        rec.started = now_mono - (now_wall - created)
        rec.outcome = "success"
        rec.output = {"prompt": "benchmark"}
        rec.logs = "echo-test: returned the input unchanged"
        state.predictions[rec.id] = rec
        ids.append(rec.id)
    return ids


def serve(argv: Sequence[str] | None = None) -> int:
    """Run the simulator and answer commands until ``quit`` or end of stdin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", default="bench-key")
    parser.add_argument("--predict-seconds", type=float, default=9.0)
    parser.add_argument("--max-in-flight", type=int, default=10)
    parser.add_argument("--creates-per-minute", type=int, default=100)
    args = parser.parse_args(argv)

    observed = _Observed()
    _install_observer(observed)
    from airflow_provider_eachlabs.testing import EachlabsSimulator

    sim = EachlabsSimulator(
        api_key=args.api_key,
        predict_seconds=args.predict_seconds,
        max_in_flight=args.max_in_flight,
        creates_per_minute=args.creates_per_minute,
    )
    with sim:
        print(f"READY {sim.base_url}", flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            cmd = command["cmd"]
            if cmd == "quit":
                break
            if cmd == "reset":
                sim.reset_counters()
                observed.reset()
                answer: dict[str, Any] = {"ok": True}
            elif cmd == "seed":
                answer = {"ids": _seed(sim, args.api_key, command["ends_at"], command["created_at"])}
            elif cmd == "stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                c = sim.counters
                answer = {
                    "creates": sum(c.creates.values()),
                    "create_requests": c.create_requests,
                    "gets": c.gets,
                    "requests": c.requests,
                    "connections": len(observed.clients),
                    "gets_by_id": dict(observed.gets_by_id),
                    "status_codes": {str(k): v for k, v in observed.status_by_code.items()},
                    "cpu_seconds": usage.ru_utime + usage.ru_stime,
                    "predictions": {
                        pid: {"created_at": rec.created_at, "run_time": rec.run_time(), "status": rec.status}
                        for pid, rec in sim.predictions.items()
                    }
                    if command.get("predictions")
                    else {},
                }
            else:
                answer = {"error": f"unknown command {cmd!r}"}
            print(json.dumps(answer), flush=True)
    return 0


class SimProcess:
    """Client side: start the wrapper in a child process and talk to it over its stdin/stdout."""

    def __init__(
        self,
        api_key: str = "bench-key",
        predict_seconds: float = 9.0,
        max_in_flight: int = 100_000,
        creates_per_minute: int = 1_000_000,
        python: str = sys.executable,
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self.api_key = api_key
        self.proc = subprocess.Popen(
            [
                python,
                str(Path(__file__).resolve()),
                "--api-key",
                api_key,
                "--predict-seconds",
                str(predict_seconds),
                "--max-in-flight",
                str(max_in_flight),
                "--creates-per-minute",
                str(creates_per_minute),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.base_url = line.split(" ", 1)[1].strip()
        self.port = int(self.base_url.rsplit(":", 1)[1])

    def ask(self, **command: Any) -> dict[str, Any]:
        """One command, one JSON answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def seed(self, ends_at: Sequence[float], created_at: Sequence[float]) -> list[str]:
        ids: list[str] = self.ask(cmd="seed", ends_at=list(ends_at), created_at=list(created_at))["ids"]
        return ids

    def stats(self, predictions: bool = False) -> dict[str, Any]:
        return self.ask(cmd="stats", predictions=predictions)

    def reset(self) -> None:
        self.ask(cmd="reset")

    def close(self) -> None:
        """Ask politely, then insist: a benchmark must never leave a server behind."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(serve())

"""Throughput of the simulator's polling route, the one a fleet of deferred tasks hammers.

The simulator runs in its own process (through its CLI, as a demo would run it), so client and
server do not share a GIL; the client keeps ~20 keep-alive connections busy with httpx.

    python benchmarks/bench_simulator.py [--seconds 5] [--concurrency 20] [--runs 3] [--json]

It bounds the other benchmarks: a trigger load asking for more GETs a second than this measures
for the simulator rather than for the triggers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
SIM_CMD = [sys.executable, "-m", "airflow_provider_eachlabs.testing"]


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [*SIM_CMD, "--port", "0", "--api-key", KEY, "--predict-seconds", "3600", "--max-in-flight", "100"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]


async def one_run(
    base_url: str, ids: list[str], seconds: float, concurrency: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": KEY}, limits=limits) as client:
        stop_at = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            i = n
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await client.get(f"/v1/prediction/{ids[i % len(ids)]}")
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"GET answered {r.status_code}: {r.text}")
                i += 1

        t_start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    return len(latencies) / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout, progress on stderr")
    args = parser.parse_args()
    out = sys.stderr if args.json else sys.stdout

    proc, base_url = start_simulator()
    try:
        ids = []
        with httpx.Client(base_url=base_url, headers={"X-API-Key": KEY}) as client:
            for n in range(5):
                r = client.post("/v1/prediction", json={"model": "echo-test", "input": {"prompt": f"p{n}"}})
                r.raise_for_status()
                ids.append(r.json()["predictionID"])
        rates: list[float] = []
        all_lat: list[float] = []
        for run in range(args.runs):
            rate, lat = asyncio.run(one_run(base_url, ids, args.seconds, args.concurrency))
            rates.append(rate)
            all_lat.extend(lat)
            print(f"run {run + 1}: {rate:.0f} GET/s over {len(lat)} requests", file=out, flush=True)
        all_lat.sort()
        p50 = all_lat[len(all_lat) // 2] * 1000
        p99 = all_lat[min(len(all_lat) - 1, int(len(all_lat) * 0.99))] * 1000
        if args.json:
            report = {
                "benchmark": "simulator",
                "median_rps": round(statistics.median(rates)),
                "rates": [round(r) for r in rates],
                "concurrency": args.concurrency,
                "seconds": args.seconds,
                "latency_p50_ms": round(p50, 2),
                "latency_p99_ms": round(p99, 2),
            }
            print(json.dumps(report, indent=2))
            return
        print(
            f"GET /v1/prediction/{{id}}: median {statistics.median(rates):.0f} req/s over {args.runs} runs "
            f"({args.concurrency} connections, {args.seconds:.0f} s each); "
            f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()

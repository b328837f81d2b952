"""Child process of bench_triggers.py / bench_latency.py: many triggers in one asyncio loop.

This is the process whose CPU and memory are measured, so it does as little else as possible: it
runs each trigger the way Airflow's TriggerRunner does (one asyncio task per trigger doing
``async for event in trigger.run()``, new triggers picked up once a second, a watchdog waking the
loop every 0.1 s), notes when each event arrives, and reads its own CPU time at the start and end of
the measured window. The parent samples its RSS and sockets from outside, and
the simulator (a third process) counts the GETs.

Input: a JSON spec file (argv[1]); output: one JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import sys
import time
from typing import Any


def rss_kb() -> int:
    """Resident set size from /proc, without importing psutil into the measured process."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


TERMINAL = frozenset({"success", "succeeded", "failed", "error", "cancelled", "canceled"})


class FloorTrigger:
    """The floor: the same GETs at the same times as ``PredictionTrigger``, made by a bare aiohttp loop
    with no Airflow and no provider code (one shared session of 10 sockets, as ours has).

    Its schedule repeats ``polling.PollSchedule`` by hand (a fixed interval from the start of the
    wait; adaptive: one second before the expected time, every second until three times it, then
    growing by half up to 30 s), so the two make the same requests and only their cost differs.
    """

    session: Any = None

    def __init__(self, spec: dict[str, Any], item: dict[str, Any]) -> None:
        self.url = f"{spec['base_url']}/v1/prediction/{item['id']}"
        self.headers = {"X-API-Key": spec["api_key"]}
        self.started_at = item["started_at"]
        self.deadline = item.get("deadline", item["started_at"] + 3600)
        self.interval = item["poll_interval"] if "poll_interval" in item else spec["poll_interval"]
        self.expected = item.get("expected_seconds", spec["expected_seconds"])

    def _delay(self, first: bool) -> float:
        if self.interval is not None:
            return float(self.interval)
        elapsed = time.time() - self.started_at
        first_look = max(1.0, self.expected - 1.0)
        if elapsed < first_look:
            return first_look - elapsed
        if first:
            return 0.0
        if elapsed < 3 * self.expected:
            return 1.0
        return min(30.0, max(1.0, (elapsed - 3 * self.expected) * 0.5))

    async def run(self) -> Any:
        import aiohttp

        if FloorTrigger.session is None:
            FloorTrigger.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10))
        first = True
        while True:
            await asyncio.sleep(min(self._delay(first), max(0.0, self.deadline - time.time())))
            first = False
            async with FloorTrigger.session.get(self.url, headers=self.headers) as answer:
                body = await answer.json()
            if body.get("status") in TERMINAL or time.time() >= self.deadline:
                yield _Event({"status": body.get("status")})
                return


class _Event:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload


def make_trigger(spec: dict[str, Any], item: dict[str, Any]) -> Any:
    """Build one trigger of the kind under test, as a deferring task would have serialized it."""
    if spec["impl"] == "floor":
        return FloorTrigger(spec, item)
    if spec["impl"] == "eachlabs":
        from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

        return PredictionTrigger(
            prediction_id=item["id"],
            eachlabs_conn_id="eachlabs_default",
            deadline=item.get("deadline", item["started_at"] + 3600),
            started_at=item["started_at"],
            # Per-item values let one process compare several schedules side by side (bench_latency).
            poll_interval=item["poll_interval"] if "poll_interval" in item else spec["poll_interval"],
            expected_seconds=item.get("expected_seconds", spec["expected_seconds"]),
        )
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    return HttpSensorTrigger(
        endpoint=item["endpoint"],
        http_conn_id="http_default",
        method="GET",
        headers={"X-API-Key": spec["api_key"]},
        poke_interval=spec["poll_interval"],
    )


async def run_one(trigger: Any) -> tuple[float, Any]:
    """TriggerRunner.run_trigger, minus the database: consume the generator, note the first event."""
    async for event in trigger.run():
        return time.time(), event.payload
    return time.time(), None


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    # The warm-up wait ends at once: a deadline now makes the first look immediate.
    warm = make_trigger(spec, {**spec["warmup"], "started_at": time.time() - 100, "deadline": time.time()})
    await run_one(warm)  # loads every module and opens the client: not what a trigger costs
    baseline_kb = rss_kb()
    t0 = spec["t0"]
    if time.time() > t0:
        raise SystemExit(f"warm-up overran the start by {time.time() - t0:.1f}s; raise --lead")
    await asyncio.sleep(t0 - time.time())
    print("STARTED", flush=True)  # the parent starts sampling RSS and sockets here
    cpu0 = time.process_time()
    wall0 = time.time()
    results: dict[str, tuple[float, Any]] = {}
    tasks: list[asyncio.Task[None]] = []

    async def one(item: dict[str, Any]) -> None:
        trigger = make_trigger(spec, item)
        if item.get("stop_at") is None:
            results[item["id"]] = await run_one(trigger)
            return
        # HttpSensorTrigger cannot see the prediction end (any 200 fires it, any 404 keeps it
        # polling), so its run is stopped where ours would have seen the end: same GETs, same time.
        try:
            await asyncio.wait_for(run_one(trigger), timeout=item["stop_at"] - time.time())
        except TimeoutError:
            results[item["id"]] = (time.time(), None)

    async def watchdog() -> None:
        """TriggerRunner.block_watchdog: the loop wakes every 0.1 s whatever the triggers do."""
        while True:
            await asyncio.sleep(0.1)

    # TriggerRunner.arun creates the triggers that arrived since its last pass, then sleeps 1 s.
    arrivals = collections.deque(sorted(spec["triggers"], key=lambda item: item["started_at"]))
    watching = asyncio.create_task(watchdog())
    while arrivals:
        while arrivals and arrivals[0]["started_at"] <= time.time():
            tasks.append(asyncio.create_task(one(arrivals.popleft())))
        await asyncio.sleep(1.0)
    # Bounded: a loop that cannot keep up (CPU-saturated) is stopped and reported, not waited for.
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, spec["hard_stop"] - time.time()))
    cpu = time.process_time() - cpu0
    for task in [*pending, watching]:
        task.cancel()
    return {
        "cpu_seconds": cpu,
        "wall_seconds": time.time() - wall0,
        "baseline_rss_kb": baseline_kb,
        "end_rss_kb": rss_kb(),
        "unfinished": len(pending),
        "events": {pid: {"t": t, "status": (p or {}).get("status")} for pid, (t, p) in results.items()},
    }


def main() -> int:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    # Trigger logs are rendered and written (Airflow's structlog writes them to stdout, which the parent
    # reads and discards; stdlib records go to /dev/null), as a triggerer writes them to its log files.
    logging.basicConfig(stream=open(os.devnull, "w"), level=logging.INFO, force=True)  # noqa: SIM115
    result = asyncio.run(main_async(spec))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

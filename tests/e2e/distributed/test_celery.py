"""The provider on a distributed Airflow: fills spread over two Celery workers, a triggerer killed
while it holds the waits, a worker killed while a fill runs on it. One prediction per fill throughout.

The figures a reader of the README wants (how long a failover took, how many connections each
triggerer held) are printed in the terminal summary.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.e2e.conftest import wait_for
from tests.e2e.distributed.conftest import (
    FIGURES,
    TRIGGERER_HEALTH_CHECK_THRESHOLD,
    TRIGGERERS,
    WORKERS,
    DistributedAirflow,
)

BATCH_IMAGES = Path(__file__).resolve().parents[3] / "example_dags" / "data" / "batch"
MANY_WAITS = "eachlabs_many_waits"
MANY_FILLS = 24
POOL_SIZE = 10  # aio.shared_session's sockets per event loop


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant at once, as a host that dies takes them all."""
    leader = psutil.Process(pid)
    for proc in [leader, *leader.children(recursive=True)]:
        proc.send_signal(signal.SIGKILL)


def _port(sim: EachlabsSimulator) -> int:
    return int(urlsplit(sim.base_url).port or 0)


def _connections_to(pid: int, port: int) -> int:
    """Established TCP connections that a process and its children hold to ``port`` on loopback."""
    leader = psutil.Process(pid)
    count = 0
    for proc in [leader, *leader.children(recursive=True)]:
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port == port:
                count += 1
    return count


def test_mapped_fills_run_across_both_workers_one_create_each(
    distributed: DistributedAirflow, tmp_path: Path
) -> None:
    """The batch example over twelve images: every fill succeeds on one worker or the other, one
    prediction each, and both workers took part."""
    stack = distributed
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted(BATCH_IMAGES.glob("*.png"))
    for n in range(12):
        (images / f"item_{n:02d}.png").write_bytes(sources[n % len(sources)].read_bytes())
    creates_before = sum(stack.fast_sim.counters.creates.values())
    run_id = stack.api.trigger(
        "eachlabs_batch_fill", conf={"input_dir": str(images), "output_dir": str(stack.output_dir / "mapped")}
    )
    state = stack.api.wait_run("eachlabs_batch_fill", run_id, 300)
    tis = stack.api.task_instances("eachlabs_batch_fill", run_id)
    assert state == "success", f"{tis}\n{stack.logs()}"
    fills = [ti for ti in tis if ti["task_id"] == "fill"]
    assert len(fills) == 12 and all(ti["state"] == "success" for ti in fills), fills
    assert sum(stack.fast_sim.counters.creates.values()) - creates_before == 12, stack.fast_sim.counters
    hosts = Counter(ti["hostname"] for ti in tis)
    assert set(hosts) <= set(WORKERS) and len(hosts) == 2, hosts
    stored = sorted(p.name for p in (stack.output_dir / "mapped").iterdir())
    assert stored == [f"item_{n:02d}.png" for n in range(12)], stored
    FIGURES["mapped fills per worker"] = ", ".join(f"{host} {n}" for host, n in sorted(hosts.items()))


def test_a_killed_triggerer_hands_its_waits_to_the_other(distributed: DistributedAirflow) -> None:
    """24 deferred fills; SIGKILL the triggerer that holds most of them. The other takes every one
    over with its deadline unchanged, and each fill succeeds with one create and no cancel."""
    stack = distributed
    sim = stack.long_sim
    creates_before = sum(sim.counters.creates.values())
    run_id = stack.api.trigger(MANY_WAITS)

    def all_held() -> dict[str, dict[str, object]] | None:
        tis = stack.api.task_instances(MANY_WAITS, run_id)
        if sum(ti["state"] == "deferred" for ti in tis) < MANY_FILLS:
            return None
        triggers = stack.triggers()
        held = {tid: t for tid, t in triggers.items() if t["prediction_id"]}
        return held if len(held) == MANY_FILLS and all(t["triggerer"] for t in held.values()) else None

    before = wait_for("24 fills deferred and held by a triggerer", all_held, timeout=240, interval=2)
    held_by = Counter(str(t["triggerer"]) for t in before.values())
    assert set(held_by) <= set(TRIGGERERS), held_by
    pool = {name: _connections_to(stack.components[name].pid, _port(sim)) for name in TRIGGERERS}
    victim = held_by.most_common(1)[0][0]
    survivor = next(name for name in TRIGGERERS if name != victim)
    _kill_tree(stack.components[victim].pid)
    killed_at = time.monotonic()

    def taken_over() -> dict[str, dict[str, object]] | None:
        now = stack.triggers()
        return now if now and all(t["triggerer"] == survivor for t in now.values()) else None

    after = wait_for(f"{survivor} to hold every trigger", taken_over, timeout=120, interval=1)
    takeover = time.monotonic() - killed_at
    # The same triggers (same ids), each with its absolute deadline and prediction unchanged.
    assert {tid: (t["deadline"], t["prediction_id"]) for tid, t in after.items()} == {
        tid: (t["deadline"], t["prediction_id"]) for tid, t in before.items()
    }
    pool[f"{survivor} after the takeover"] = _connections_to(stack.components[survivor].pid, _port(sim))
    state = stack.api.wait_run(MANY_WAITS, run_id, 300)
    last_result = time.monotonic() - killed_at
    tis = stack.api.task_instances(MANY_WAITS, run_id)
    assert state == "success", f"{tis}\n{stack.logs()}"
    assert all(ti["state"] == "success" and ti["try_number"] == 1 for ti in tis), tis
    assert sum(sim.counters.creates.values()) - creates_before == MANY_FILLS, sim.counters
    assert sim.counters.cancels == 0, sim.counters
    assert all(count <= POOL_SIZE for count in pool.values()), pool
    FIGURES["triggers held before the kill"] = ", ".join(f"{name} {n}" for name, n in sorted(held_by.items()))
    FIGURES["triggerer failover"] = (
        f"SIGKILL {victim} -> {survivor} held all {MANY_FILLS} after {takeover:.1f} s "
        f"(health check threshold {TRIGGERER_HEALTH_CHECK_THRESHOLD} s); last fill done {last_result:.1f} s "
        "after the kill (60 s predictions)"
    )
    FIGURES["connections to the API per triggerer"] = ", ".join(f"{k} {v}" for k, v in pool.items())
    stack.start(victim)


def test_a_killed_worker_s_fill_is_retried_on_the_other_and_re_attaches(
    distributed: DistributedAirflow,
) -> None:
    """SIGKILL the Celery worker (and everything under it) while a fill waits on it: the scheduler
    fails the silent task, the retry runs on the other worker and re-attaches: one create."""
    stack = distributed
    sim = stack.slow_sim
    stack.point_default_at(sim)
    victim = ""
    try:
        creates_before = sum(sim.counters.creates.values())
        gets_before = sim.counters.gets
        run_id = stack.api.trigger("eachlabs_worker_death")
        wait_for(
            "the first try's create and first poll",
            lambda: sum(sim.counters.creates.values()) > creates_before and sim.counters.gets > gets_before,
            timeout=120,
        )
        (first,) = stack.api.task_instances("eachlabs_worker_death", run_id)
        victim = first["hostname"]
        assert victim in WORKERS, first
        _kill_tree(stack.components[victim].pid)
        killed_at = time.monotonic()
        state = stack.api.wait_run("eachlabs_worker_death", run_id, 300)
        recovered = time.monotonic() - killed_at
        (ti,) = stack.api.task_instances("eachlabs_worker_death", run_id)
        log = stack.api.log("eachlabs_worker_death", run_id, "fill", ti["try_number"])
        assert state == "success", f"{ti}\n{log}\n{stack.logs()}"
        assert ti["try_number"] == 2 and ti["hostname"] != victim and ti["hostname"] in WORKERS, ti
        assert sum(sim.counters.creates.values()) - creates_before == 1, sim.counters
        assert "Input unchanged since try 1: re-using prediction" in log, log
        FIGURES["worker death"] = (
            f"SIGKILL {victim} mid-wait -> try 2 on {ti['hostname']} re-attached, one create, "
            f"done {recovered:.1f} s after the kill (task heartbeat timeout 20 s)"
        )
    finally:
        stack.point_default_at(stack.fast_sim)
        if victim in stack.components and not stack.components[victim].alive():
            stack.start(victim)

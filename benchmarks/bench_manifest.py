"""What one view of a big batch's tab costs the api-server: the streamed manifest beside a whole read.

A batch of 100,000 items writes a results manifest of about 35 MB. The tab reads it for its counts,
its newest outputs and its failures, and each thumbnail asks for one item's row. The reading the
plugin had before (the whole file into memory, every row into a dict, an index of every row by key)
is run beside the streaming one it has now (counts, the rows shown and an 8-byte-a-row index), on
the same file, each in a fresh process so that its peak RSS is its own: one view, then 12 views at
once with nothing cached (each in its own thread, as the api-server's thread pool serves them).

    python benchmarks/bench_manifest.py [--rows 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402


def write_manifest(path: Path, rows: int) -> None:
    """Rows shaped as the batch writes them, one in ten a failure with an error text."""
    with path.open("w") as handle:
        for n in range(rows):
            failed = n % 10 == 9
            row = {
                "key": f"product_{n:06d}",
                "status": "failed" if failed else "success",
                "prediction_id": f"2c2b{n:08x}-8f1e-4b7a-9c1d-5e6f7a8b9c0d",
                "output_url": f"https://cdn.example.com/outputs/2c2b{n:08x}.png",
                "stored_path": None if failed else f"{path.parent}/product_{n:06d}.png",
                "cost": 0.05,
                "predict_time": 8.0 + (n % 17) / 10,
                "error": "PROVIDER_REJECTED: the provider rejected the prompt" if failed else None,
                "input_key": f"{n:032x}",
            }
            handle.write(json.dumps(row) + "\n")


def whole_read(path: str, folder: str) -> int:
    """The reading the tab did before: the file whole, every row parsed and indexed by key."""
    content = Path(path).read_bytes()
    rows = [json.loads(line) for line in content.decode("utf-8", "replace").splitlines()]
    by_key = {str(row.get("key")): row for row in rows}
    return len(by_key)


def streamed(path: str, folder: str) -> int:
    from airflow_provider_eachlabs.plugin import batches

    batches._kept.clear()  # every view a cache miss
    return batches.batch_results(path, folder).done


def one_run(kind: str, path: str, folder: str, views: int) -> dict[str, Any]:
    """In this process: ``views`` concurrent views of one kind; the seconds and the peak RSS."""
    read = whole_read if kind == "whole" else streamed
    if kind == "streamed":
        from airflow_provider_eachlabs.plugin import batches  # imported before the clock starts

        del batches
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    threads = [threading.Thread(target=read, args=(path, folder)) for _ in range(views)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_rss_mb": peak / 1024, "added_rss_mb": (peak - before) / 1024}


def measure(kind: str, path: Path, views: int, repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(path), str(views)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "added_rss_mb": statistics.median(r["added_rss_mb"] for r in runs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "VIEWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, path, views = args.child
        print(json.dumps(one_run(kind, path, str(Path(path).parent) + "/", int(views))))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "eachlabs-results.jsonl"
        write_manifest(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        figures = {
            f"{kind}_{views}": measure(kind, path, views, args.repeats)
            for views in (1, 12)
            for kind in ("whole", "streamed")
        }
    report = {"machine": machine(), "rows": args.rows, "manifest_mb": size_mb, "figures": figures}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"results manifest: {args.rows:,} rows, {size_mb:.1f} MB; median of {args.repeats} processes")
    print(f"{'views at once':>14} | {'reading':>9} | {'seconds':>8} | {'RSS added (MB)':>14}")
    for name, figure in figures.items():
        kind, views = name.split("_")
        print(f"{views:>14} | {kind:>9} | {figure['seconds']:8.2f} | {figure['added_rss_mb']:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

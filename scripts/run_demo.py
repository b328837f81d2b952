"""``make demo``: the one-fill example DAG, end to end, with ``airflow dags test``.

Without ``EACHLABS_API_KEY`` it starts the bundled simulator (the model page's 9-second fills, on a
loopback port) and points ``eachlabs_default`` at it; with the key set it runs against the real API.
Airflow runs on an embedded SQLite database under ``.airflow-demo/``; the filled image and a
before | mask | after preview land in ``demo-output/``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "demo-output"
AIRFLOW_HOME = ROOT / ".airflow-demo"
DAG_ID = "eachlabs_flux_fill"
PROVIDER_LINES = ("airflow_provider_eachlabs", "Eachlabs", "ERROR", "Traceback")
LOG_PREFIX = re.compile(r"^\S+Z \[(\w+)\s*\] ")


def start_simulator(stack: ExitStack) -> tuple[str, str]:
    """Run the simulator as its own process, as a user would from the shell; return URL and key."""
    api_key = "demo-key"
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_eachlabs.testing", "--port", "0", "--api-key", api_key],
        stdout=subprocess.PIPE,
        text=True,
    )
    stack.callback(stop, process)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if "http://" not in line:
        raise SystemExit(f"The simulator did not start: {line!r}")
    url = line[line.index("http://") :].split()[0]
    print(f"Started the Eachlabs simulator at {url} (9-second fills, as the model page estimates)")
    return url, api_key


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    print("Stopped the Eachlabs simulator")


def airflow_env(host: str, api_key: str) -> dict[str, str]:
    connection = {"conn_type": "eachlabs", "host": host, "password": api_key}
    return {
        **os.environ,
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps(connection),
        "EACHLABS_DEMO_OUTPUT": str(OUTPUT),
    }


def airflow(env: dict[str, str], *args: str, log: Path) -> int:
    """Run an ``airflow`` command, keep its whole output in ``log`` and echo the provider's lines."""
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            if any(marker in line for marker in PROVIDER_LINES):
                print("  " + readable(line))
        return process.wait()


def readable(line: str) -> str:
    """A structured log line without its timestamp and logger: the event is what a person reads."""
    text = LOG_PREFIX.sub(lambda match: f"{match.group(1)}: ", line.rstrip())
    return text.split(" [airflow", 1)[0]


def main() -> int:
    started = time.monotonic()
    OUTPUT.mkdir(exist_ok=True)
    AIRFLOW_HOME.mkdir(exist_ok=True)
    for old in OUTPUT.glob("*.*"):
        old.unlink()
    with ExitStack() as stack:
        api_key = os.environ.get("EACHLABS_API_KEY", "").strip()
        if api_key:
            host = os.environ.get("EACHLABS_API_HOST", "https://api.eachlabs.ai")
            print(f"EACHLABS_API_KEY is set: running against {host} (one fill costs $0.05)")
        else:
            host, api_key = start_simulator(stack)
        env = airflow_env(host, api_key)
        if airflow(env, "db", "migrate", log=OUTPUT / "airflow-db-migrate.log") != 0:
            print(f"airflow db migrate failed: see {OUTPUT / 'airflow-db-migrate.log'}")
            return 1
        print(f"Running: airflow dags test {DAG_ID}")
        code = airflow(env, "dags", "test", DAG_ID, log=OUTPUT / "airflow-dags-test.log")
    images = sorted(p for p in OUTPUT.glob("*.png") if p.name != "preview.png")
    if code != 0 or not images:
        print(f"The demo failed (exit code {code}): the full log is {OUTPUT / 'airflow-dags-test.log'}")
        return code or 1
    print(f"\nDone in {time.monotonic() - started:.0f}s.")
    print(f"  filled image: {images[-1]}")
    print(f"  before | mask | after: {OUTPUT / 'preview.png'}")
    print(f"  full Airflow log: {OUTPUT / 'airflow-dags-test.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

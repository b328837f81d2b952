"""The API key and the webhook secret never show up anywhere: not in logs at any level, XCom, errors,
reprs or the database (rendered template fields included: the secret comes from a Variable template).

``leak_probe.py`` runs whole DAGs (success, failure, timeouts, every fault, a wrong key) at DEBUG
level in its own process and Airflow home; this test then reads everything that process left —
its output, every file under its Airflow home (the SQLite metadata database with XCom, rendered
template fields, trigger rows and task instances, and the task logs) and the stored outputs — and
looks for the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

KEY = "sk-leakcheck-7d41f0c29b"
WRONG_KEY = "sk-wrongkey-5ea2c9d113"
WEBHOOK_SECRET = "whsec-leakcheck-93be0f7a51"


def without_airflow_in_process_comms(printed: bytes) -> bytes:
    """The output less Airflow's own ``dag.test()`` debug line that echoes every secret it masks.

    Airflow masks a connection's password when a task reads it, by sending ``MaskSecret`` to its
    supervisor. ``dag.test()``'s in-process stand-in for the supervisor logs each request at DEBUG,
    value included ("Sending request msg=MaskSecret(value=...)"); a real worker's supervisor omits
    that body. The line is Airflow's, written whatever this provider does, so it is set aside here,
    and only it: every other line of output still counts.
    """
    lines = printed.splitlines(keepends=True)
    return b"".join(
        line for line in lines if not (b"Sending request" in line and b"msg=MaskSecret(value=" in line)
    )


def test_no_key_anywhere_after_every_kind_of_run(tmp_path: Path):
    home = tmp_path / "airflow"
    output = tmp_path / "outputs"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).parent / "probe"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
        "PROBE_OUTPUT": str(output),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("AIRFLOW_CONN_EACHLABS_DEFAULT", None)
    env.pop("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", None)  # the probe's own DAGS_FOLDER only
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
    )
    probe = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "leak_probe.py"), KEY, WRONG_KEY, WEBHOOK_SECRET],
        env=env,
        capture_output=True,
        timeout=600,
    )
    printed = probe.stdout + probe.stderr
    results = [
        json.loads(line) for line in probe.stdout.decode().splitlines() if line.startswith('{"scenario"')
    ]
    assert probe.returncode == 0, printed.decode()[-3000:]
    assert len(results) == 21
    assert [r["scenario"] for r in results if r["state"] != r["expected"]] == []
    assert b"DEBUG" in printed or b"debug" in printed

    places = {"the probe's output": without_airflow_in_process_comms(printed)}
    for path in [*home.rglob("*"), *output.rglob("*")]:
        if path.is_file():
            places[str(path)] = path.read_bytes()
    assert any(name.endswith("airflow.db") for name in places)
    for secret in (KEY, WRONG_KEY, WEBHOOK_SECRET):
        leaks = [name for name, content in places.items() if secret.encode() in content]
        assert leaks == [], f"{secret} found in {leaks}"

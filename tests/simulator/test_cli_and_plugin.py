"""The shell entry point and the opt-in pytest fixture, run as a user would run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
SIM_CMD = [sys.executable, "-m", "airflow_provider_eachlabs.testing"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_cli_prints_url_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [*SIM_CMD, "--port", "0", "--api-key", "cli-key", "--predict-seconds", "0.1"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("Eachlabs simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[-1]
        resp = requests.post(
            url + "/v1/prediction",
            json={"model": "echo-test", "input": {}},
            headers={"X-API-Key": "cli-key"},
            timeout=5,
        )
        assert resp.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pytest_plugin_fixture(tmp_path: Path) -> None:
    test_file = tmp_path / "test_uses_plugin.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import requests

            pytest_plugins = ["airflow_provider_eachlabs.testing.pytest_plugin"]

            def test_it(eachlabs_simulator):
                url = eachlabs_simulator.base_url + "/v1/model?slug=flux-fill-pro"
                assert requests.get(url, timeout=5).status_code == 200
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_import_is_cheap() -> None:
    code = (
        "import sys, airflow_provider_eachlabs.testing\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=60)

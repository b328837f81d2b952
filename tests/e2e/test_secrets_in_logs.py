"""After everything the e2e suite ran (successes, failures, kills, restarts, a marked-failed wait, a
webhook secret from a Variable), no log the deployment wrote holds the API key or the webhook secret.

Runs after the other e2e modules (pytest orders the files by name), on the same deployment: every
component's own log (api-server, scheduler, dag-processor, triggerer) and every task and trigger log.
"""

from __future__ import annotations

from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET, AirflowStack


def test_no_log_of_the_deployment_holds_the_key_or_the_webhook_secret(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    files = [path for path in stack.processes.log_dir.rglob("*") if path.is_file()]
    task_logs = [path for path in files if "dag_id=" in str(path)]
    assert task_logs, f"no task logs found under {stack.processes.log_dir}"
    assert {m.name for m in stack.processes.processes} >= {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
    }
    leaks = {
        secret: [str(path) for path in files if secret.encode() in path.read_bytes()]
        for secret in (API_KEY, WEBHOOK_SECRET)
    }
    assert leaks == {API_KEY: [], WEBHOOK_SECRET: []}
    # The secret did travel: the webhook fill's task ran and its rendered field was masked, not absent.
    assert any("eachlabs_webhook_fill" in str(path) for path in task_logs)

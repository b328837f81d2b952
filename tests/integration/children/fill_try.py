"""One try of a fill in a process of its own, so a test can kill it or limit it for real.

``python -m tests.integration.children.fill_try STATE_FILE OPERATOR_KWARGS_JSON [FILE_SIZE_LIMIT]``

The task's ``task_state_store`` is a JSON file (``STATE_FILE``), written through on every ``set`` as
Airflow's store is, so a later try in the test process reads what this try recorded before it died.
With ``FILE_SIZE_LIMIT`` the process may not write a file larger than that many bytes (RLIMIT_FSIZE),
which makes any bigger write fail part-way, as a full disk would. Prints ``RESULT <json>`` or
``ERROR <class>: <message>``.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from pathlib import Path
from typing import Any


class FileStateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {"values": {}, "retention": {}}

    def get(self, key: str, default: Any = None) -> Any:
        return self._load()["values"].get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        data = self._load()
        data["values"][key] = value
        data["retention"][key] = str(retention)
        self.path.write_text(json.dumps(data))


class RecordingTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def main() -> int:
    from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

    state_file, arguments = Path(sys.argv[1]), json.loads(sys.argv[2])
    operator = FluxFillOperator(task_id="fill", **arguments)
    context = {"ti": RecordingTI(), "task_state_store": FileStateStore(state_file)}
    if len(sys.argv) > 3:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        limit = int(sys.argv[3])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        result = operator.execute(context)
    except Exception as error:
        print(f"ERROR {type(error).__name__}: {error}", flush=True)
        return 1
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

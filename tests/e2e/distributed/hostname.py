"""``[core] hostname_callable`` for the distributed stack: each component names itself.

Every process of the stack runs on this one machine, so the real host name cannot tell the two
workers or the two triggerers apart. Each is started with ``EACHLABS_E2E_HOSTNAME`` set
(``worker-1``, ``triggerer-2``...), and Airflow records that name on the task instances a worker
runs and on the triggerer's job, where the tests read it back.
"""

from __future__ import annotations

import os
import socket


def from_environment() -> str:
    return os.environ.get("EACHLABS_E2E_HOSTNAME") or socket.getfqdn()

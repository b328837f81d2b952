"""Final errors fail the task at once: the one place that reads ``is_final`` for a task.

A wrong key, a spent balance, bad input or a content-policy rejection is the same on every try, so
spending the task's retries (and their delays) on it only hides the message for longer. Transient
errors pass through unchanged for Airflow's retries, which re-attach to the same prediction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def final_errors_fail_the_task() -> Iterator[None]:
    """Turn a final ``EachlabsError`` into ``AirflowFailException`` with the same message.

    The error family is imported only when an error happens: DAG files import the operators, and the
    DAG processor parses them again and again.
    """
    try:
        yield
    except Exception as error:
        from airflow_provider_eachlabs.exceptions import is_final

        if not is_final(error):
            raise
        from airflow.sdk.exceptions import AirflowFailException

        # One error, once: the message already says everything, a chained traceback would repeat it.
        raise AirflowFailException(str(error)) from None

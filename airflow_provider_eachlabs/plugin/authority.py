"""What the api-server may touch for one task instance: taken from the DAG, never from what it wrote.

The api-server can read every connection and its own disks and buckets, so it is more privileged
than any task. XCom is written by DAG code and can be edited over the REST API by anyone allowed to
edit a DAG's task instances; it is display data here and never names a connection, a file or a
folder. Those come from the task's template fields as the task rendered them (Airflow's rendered
task instance fields, which no REST call writes), and, for a run whose rendered fields Airflow has
pruned, from the task's serialized definition when the field holds no template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# The template fields the plugin takes its orders from.
CONN_FIELD = "eachlabs_conn_id"
OUTPUT_FIELD = "output_path"
RESULTS_FIELD = "results_path"
_FIELDS = (CONN_FIELD, OUTPUT_FIELD, RESULTS_FIELD)
# What Airflow writes in place of a rendered value longer than [core] max_templated_field_length.
_TRUNCATED = "Truncated. You can change this behaviour"


@dataclass(frozen=True)
class Authority:
    """The connection and the places the DAG gave this task; None where it gave none (or it is no
    longer known), with the reason the page shows instead."""

    conn_id: str | None
    output_path: str | None
    results_path: str | None
    unknown: str | None = None

    @property
    def manifest_path(self) -> str | None:
        """A batch's results manifest: its ``results_path``, else the file the operator names in its
        ``output_path``."""
        from airflow_provider_eachlabs.operators.batch import RESULTS_NAME

        if self.results_path:
            return self.results_path
        return f"{self.output_path.rstrip('/')}/{RESULTS_NAME}" if self.output_path else None


NO_AUTHORITY = Authority(None, None, None, "this task names no Eachlabs connection or output_path here")


def task_authority(session: Session, ti: Any) -> Authority:
    """The task's rendered connection and paths; its definition's when Airflow pruned the rendered
    ones; nothing when neither is known."""
    fields = _rendered_fields(session, ti)
    if fields is None or CONN_FIELD not in fields:
        fields = _declared_fields(session, ti)
    if fields is None:
        return Authority(
            None,
            None,
            None,
            "Airflow no longer keeps this run's rendered fields and the task's definition templates "
            "them, so its connection and output_path are not known here",
        )
    if CONN_FIELD not in fields:
        return NO_AUTHORITY
    values = {name: _plain(fields.get(name)) for name in _FIELDS}
    return Authority(values[CONN_FIELD], values[OUTPUT_FIELD], values[RESULTS_FIELD])


def _plain(value: Any) -> str | None:
    """A usable field value: a non-empty string that is neither truncated nor an unrendered template."""
    if not isinstance(value, str) or not value or value.startswith(_TRUNCATED):
        return None
    return None if "{{" in value or "{%" in value else value


def _rendered_fields(session: Session, ti: Any) -> dict[str, Any] | None:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from sqlalchemy import select

    found = session.scalar(
        select(RenderedTaskInstanceFields.rendered_fields).where(
            RenderedTaskInstanceFields.dag_id == ti.dag_id,
            RenderedTaskInstanceFields.run_id == ti.run_id,
            RenderedTaskInstanceFields.task_id == ti.task_id,
            RenderedTaskInstanceFields.map_index == ti.map_index,
        )
    )
    return found if isinstance(found, dict) else None


def _declared_fields(session: Session, ti: Any) -> dict[str, Any] | None:
    """The template fields as the DAG version the task ran declares them (before rendering)."""
    version_id = getattr(ti, "dag_version_id", None)
    if version_id is None:
        return None
    dag = _dag_bag().get_dag(version_id, session=session)
    task = dag.task_dict.get(ti.task_id) if dag is not None else None
    if task is None or CONN_FIELD not in (getattr(task, "template_fields", None) or ()):
        return {} if task is not None else None
    from airflow_provider_eachlabs.settings import DEFAULT_CONN_ID

    partial = getattr(task, "partial_kwargs", None)
    if isinstance(partial, dict):  # a mapped task: what .partial() gave; what .expand() gives is per index
        expanded = getattr(getattr(task, "expand_input", None), "value", None)
        declared = {k: partial.get(k) for k in _FIELDS if not (isinstance(expanded, dict) and k in expanded)}
    else:
        declared = {name: getattr(task, name, None) for name in _FIELDS}
    # Serialization leaves out a field at its default: the default connection, no path.
    if CONN_FIELD in declared and declared[CONN_FIELD] is None:
        declared[CONN_FIELD] = DEFAULT_CONN_ID
    return declared


_bag: Any = None


def _dag_bag() -> Any:
    """The api-server's kind of DAG bag (cached by version, bounded by ``[api] dag_cache_size``)."""
    global _bag
    if _bag is None:
        from airflow.api_fastapi.common.dagbag import create_dag_bag

        _bag = create_dag_bag()
    return _bag

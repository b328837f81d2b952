"""OpenLineage for the provider's tasks: the files a fill reads and writes, and what its prediction cost.

The operators' and the sensor's ``get_openlineage_facets_on_start`` / ``..._on_complete`` import this
module inside the method, and only the OpenLineage provider calls them: nothing here is imported when
a DAG file is parsed, or at all when ``apache-airflow-providers-openlineage`` is not installed.

Datasets are named by the OpenLineage naming spec (https://openlineage.io/docs/spec/naming):

============================================  ======================  ==========================
location                                      namespace               name
============================================  ======================  ==========================
``/data/scene.png``, ``file:///data/x.png``   ``file``                ``/data/scene.png``
``file://host/data/x.png``                    ``file://host``         ``/data/x.png``
``s3://bucket/photos/x.png``                  ``s3://bucket``         ``photos/x.png``
``gs://``, ``gcs://``, other object stores    ``gs://bucket``, ...    the key
``https://cdn.example.com/x.png?sig=...``     ``https://cdn...com``   ``/x.png`` (no query)
============================================  ======================  ==========================

A connection id in an object-storage URI (``s3://aws_conn@bucket/key``) and a URL's user, password
and query (a presigned URL's signature) are never part of a name.

This module sits above nothing of the provider's but ``results`` (the XCom keys): the operators and
the sensor hand it plain values, so it imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.openlineage.extractors import OperatorLineage
from attrs import define
from openlineage.client.event_v2 import Dataset, InputDataset, OutputDataset
from openlineage.client.facet_v2 import RunFacet

from airflow_provider_eachlabs.results import OUTCOME_KEY

# The run facets' keys in an event's ``run.facets``.
PREDICTION_FACET = "eachlabs_prediction"
BATCH_FACET = "eachlabs_batch"
# A batch given inline names at most this many distinct input files: an event is sent whole, and a
# batch of thousands is better described by its manifest.
MAX_BATCH_INPUT_FILES = 100
# The input fields that name files, in a fill's input and in a batch item.
FILE_FIELDS = ("image", "mask")
# Object stores whose namespace is ``<scheme>://<bucket>`` under a canonical scheme.
_BUCKET_SCHEMES = {"gcs": "gs", "s3a": "s3", "s3n": "s3"}


@define
class EachlabsPredictionRunFacet(RunFacet):
    """One Eachlabs prediction a task bought, re-used or watched.

    :param predictionId: the prediction's id.
    :param model: the model slug (None for a sensor, which is not told it).
    :param status: the prediction's status as the task last saw it (``success``, ``failed``, ...).
    :param cost: what the API billed for it, in USD, when it said.
    :param predictTime: the model's run time in seconds, when the API said.
    """

    predictionId: str  # OpenLineage facets name their fields in camelCase
    model: str | None = None
    status: str | None = None
    cost: float | None = None
    predictTime: float | None = None


@define
class EachlabsBatchRunFacet(RunFacet):
    """A batch task's predictions, counted: one facet for all its fills.

    :param model: the model slug.
    :param items: items in the batch, invalid ones included.
    :param succeeded: items whose output is stored.
    :param failed: items that failed.
    :param invalid: items refused before anything was bought.
    :param cost: what the batch's predictions cost, in USD.
    :param p50PredictTime: the median predict time of its predictions, in seconds.
    :param resultsPath: the results manifest, one row per item with its prediction id.
    """

    model: str | None = None
    items: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    invalid: int | None = None
    cost: float | None = None
    p50PredictTime: float | None = None
    resultsPath: str | None = None


def dataset_name(location: Any) -> tuple[str, str] | None:
    """The OpenLineage ``(namespace, name)`` of a file location, or None when it names no file.

    A folder's name has no trailing ``/``: ``out/`` and ``out`` are one dataset."""
    named = _dataset_name(location)
    if named is None:
        return None
    namespace, name = named
    return namespace, (name.rstrip("/") or name)


def _dataset_name(location: Any) -> tuple[str, str] | None:
    if not isinstance(location, str) and not hasattr(location, "__fspath__"):
        return None
    text = str(os.fspath(location) if hasattr(location, "__fspath__") else location).strip()
    if not text or text.startswith("data:"):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1:  # a local path (a drive letter is not a scheme)
        return "file", os.path.abspath(os.path.expanduser(text))
    authority = parts.netloc.rpartition("@")[2]  # never a user, password or connection id
    if scheme == "file":
        host = "" if authority in ("", "localhost") else authority
        return (f"file://{host}" if host else "file"), parts.path or "/"
    if scheme in ("http", "https"):
        if not authority:
            return None
        return f"{scheme}://{authority.lower()}", parts.path or "/"
    if not authority:
        return None
    return f"{_BUCKET_SCHEMES.get(scheme, scheme)}://{authority}", parts.path.lstrip("/")


def input_datasets(locations: Iterable[Any]) -> list[InputDataset]:
    """The files among ``locations`` as input datasets, each once, in order."""
    return [InputDataset(namespace=namespace, name=name) for namespace, name in _distinct(locations)]


def output_datasets(locations: Iterable[Any]) -> list[OutputDataset]:
    """The files among ``locations`` as output datasets, each once, in order."""
    return [OutputDataset(namespace=namespace, name=name) for namespace, name in _distinct(locations)]


def _distinct(locations: Iterable[Any]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for location in locations:
        named = dataset_name(location)
        if named is not None:
            seen.setdefault(named, None)
    return list(seen)


def own_xcom(task_instance: Any, key: str) -> Any:
    """What this task instance pushed under ``key`` (its own map index), or None when nothing was or it
    cannot be read: lineage never fails a task."""
    if task_instance is None:
        return None
    try:
        return task_instance.xcom_pull(task_ids=task_instance.task_id, key=key)
    except Exception:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def prediction_facet(result: Any, outcome: Any = None, model: str | None = None) -> RunFacet | None:
    """The run facet of a task's prediction: from its XCom result (a dict, or the bare id a task with
    ``wait_for_completion=False`` returns), else from its ``eachlabs_outcome`` (a failed task's);
    None when neither names a prediction."""
    source: Mapping[str, Any]
    if isinstance(result, Mapping):
        source = result
    elif isinstance(result, str) and result:
        source = {"prediction_id": result, "status": "submitted"}
    elif isinstance(outcome, Mapping) and not outcome.get("batch"):
        source = outcome
    else:
        return None
    prediction_id = _text(source.get("prediction_id"))
    if prediction_id is None:
        return None
    return EachlabsPredictionRunFacet(
        predictionId=prediction_id,
        model=_text(source.get("model")) or model,
        status=_text(source.get("status")),
        cost=_number(source.get("cost")),
        predictTime=_number(source.get("predict_time")),
    )


def stored_files(result: Any) -> list[str]:
    """The files a task's XCom result says it wrote: every stored output, then the preview."""
    if not isinstance(result, Mapping):
        return []
    paths = result.get("stored_paths")
    files = [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
    if not files and isinstance(result.get("stored_path"), str):
        files = [result["stored_path"]]
    if isinstance(result.get("preview_path"), str):
        files.append(result["preview_path"])
    return files


def prediction_lineage(
    inputs: Iterable[Any], task_instance: Any = None, *, model: str | None = None
) -> OperatorLineage[Dataset, RunFacet]:
    """A fill's or a sensor's lineage: ``inputs`` (its rendered image and mask) and, when the task
    ended (``task_instance`` given), the files its result names and its prediction's run facet.

    A task that left no result has no outputs; its facet then comes from the outcome it left (a
    failed task's prediction and what it cost), and there is none when it bought nothing."""
    inputs_: list[Dataset] = list(input_datasets(inputs))
    if task_instance is None:
        return OperatorLineage(inputs=inputs_)
    result = own_xcom(task_instance, "return_value")
    outcome = own_xcom(task_instance, OUTCOME_KEY) if result is None else None
    facet = prediction_facet(result, outcome, model)
    return OperatorLineage(
        inputs=inputs_,
        outputs=list(output_datasets(stored_files(result))),
        run_facets={PREDICTION_FACET: facet} if facet is not None else {},
    )


def batch_input_files(items: Any, defaults: Any, items_path: Any = None) -> list[Any]:
    """What a batch reads: its manifest and the files the defaults name when it has one, else the
    files its inline items name (each item over the defaults), at most ``MAX_BATCH_INPUT_FILES``
    distinct ones."""
    defaults = defaults if isinstance(defaults, Mapping) else {}
    if items_path:
        return [items_path, *(defaults.get(field) for field in FILE_FIELDS)]
    if isinstance(items, str):  # a template that rendered a list as text
        import json

        try:
            items = json.loads(items)
        except ValueError:
            return []
    named: dict[tuple[str, str], Any] = {}
    for item in items if isinstance(items, (list, tuple)) else ():
        if not isinstance(item, Mapping):
            continue
        merged = {**defaults, **item}
        for field in FILE_FIELDS:
            found = dataset_name(merged.get(field))
            if found is not None and found not in named:
                if len(named) == MAX_BATCH_INPUT_FILES:
                    return list(named.values())
                named[found] = merged[field]
    return list(named.values())


def batch_lineage(
    inputs: Iterable[Any],
    output_folder: str,
    results_path: str,
    task_instance: Any = None,
    *,
    model: str | None = None,
) -> OperatorLineage[Dataset, RunFacet]:
    """A batch's lineage: what it reads and, when it ended, its output folder, its results manifest
    (which names every item's prediction and stored file) and its counts and spend as a run facet."""
    inputs_: list[Dataset] = list(input_datasets(inputs))
    if task_instance is None:
        return OperatorLineage(inputs=inputs_)
    summary = own_xcom(task_instance, "return_value")
    if not isinstance(summary, Mapping):
        summary = own_xcom(task_instance, OUTCOME_KEY)
        if not isinstance(summary, Mapping) or not summary.get("batch"):
            return OperatorLineage(inputs=inputs_)
        # A batch that failed leaves only its outcome: counts of what it stored, no item total.
        summary = {**summary, "spend": summary.get("cost"), "items": None, "invalid": None}
    outputs: list[Dataset] = list(
        output_datasets([output_folder, _text(summary.get("results_path")) or results_path])
    )
    facets: dict[str, RunFacet] = {
        BATCH_FACET: EachlabsBatchRunFacet(
            model=model,
            items=_count(summary.get("items")),
            succeeded=_count(summary.get("succeeded")),
            failed=_count(summary.get("failed")),
            invalid=_count(summary.get("invalid")),
            cost=_number(summary.get("spend")),
            p50PredictTime=_number(summary.get("p50_predict_time")),
            resultsPath=_text(summary.get("results_path")) or results_path,
        )
    }
    return OperatorLineage(inputs=inputs_, outputs=outputs, run_facets=facets)

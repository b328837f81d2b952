"""Asset events that name what a task's prediction made: the extra of every Asset in a task's ``outlets``.

When a task of this provider (the operators, ``@task.eachlabs``, the batch operators, the sensor)
declares Assets in ``outlets``, Airflow records one Asset event per Asset when the task succeeds. The
task fills in that event's ``extra`` (``context["outlet_events"][asset].extra``) with what a consumer
needs to find the output: the model, the prediction id, where the file is stored, its sha256 and
what it cost. A batch names its results manifest and its counts, and its stored files only while
there are at most ``MAX_LISTED_ITEMS`` of them. With an ``AssetAlias`` in ``outlets``, each stored
file becomes an Asset of its own, its URI the file's (``file://`` for a local path, the
object-storage URI otherwise), attached to the alias (``outlet_events[alias].add(Asset(uri), extra)``),
up to ``MAX_ALIAS_ASSETS`` files a task.

An extra holds ids, paths and numbers only: never the API key, a webhook secret, an output URL (a
presigned URL's signature is a credential), a password in a storage URI, or image bytes. Nothing here
can fail a task: a problem with an outlet is logged as a warning and the task goes on.

Called by the operators and the sensor at the end of a successful task; a task without outlets
pays one ``getattr``. Airflow's asset classes are imported only when there are outlets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from airflow.sdk import Context

# A batch lists its stored files in the extra while there are at most this many; past it, the extra
# holds the counts and the results manifest's path, which lists every item.
MAX_LISTED_ITEMS = 100
# An AssetAlias gets one Asset per stored file, for at most this many files of one task.
MAX_ALIAS_ASSETS = 1000
# Airflow's own limit on an Asset's URI and name.
_MAX_URI_CHARS = 1500


def announce_prediction(context: Context, result: Mapping[str, Any], *, log: Any) -> None:
    """Name ``result`` (a task's XCom result: prediction id, model, cost, stored files) in the extra
    of each Asset in the task's outlets, and attach each stored file to its AssetAliases."""
    try:
        targets = _targets(context)
        if targets is None:
            return
        extra = prediction_extra(result)
        _emit(context, targets, extra, lambda: _prediction_files(result, extra), log)
    except Exception as error:
        log.warning(
            "The asset events of prediction %s carry no extra: %s", result.get("prediction_id"), error
        )


def announce_batch(
    context: Context,
    summary: Mapping[str, Any],
    *,
    model: str,
    rows: Callable[[], Iterable[Mapping[str, Any]]],
    log: Any,
) -> None:
    """Name a batch (``summary``: its counts, spend and results manifest) in the extra of each Asset
    in the task's outlets. ``rows`` reads the results manifest, only when its items are listed or an
    AssetAlias wants them."""
    try:
        targets = _targets(context)
        if targets is None:
            return
        succeeded = int(summary.get("succeeded") or 0)
        wants_rows = succeeded <= MAX_LISTED_ITEMS or bool(targets[1])
        stored = list(_stored_rows(rows(), MAX_ALIAS_ASSETS + 1)) if wants_rows and succeeded else []
        extra = batch_extra(summary, model, stored if succeeded <= MAX_LISTED_ITEMS else None)
        files = [(row["stored_path"], _item_extra(model, row)) for row in stored]
        _emit(context, targets, extra, lambda: files, log, total_files=succeeded)
    except Exception as error:
        log.warning("The asset events of this batch carry no extra: %s", error)


def prediction_extra(result: Mapping[str, Any]) -> dict[str, Any]:
    """The extra of one prediction's Asset event (see README, "Assets")."""
    extra: dict[str, Any] = {
        "model": _text(result.get("model")),
        "prediction_id": _text(result.get("prediction_id")),
        "status": _text(result.get("status")),
        "stored_path": _location(result.get("stored_path")),
        "sha256": _text(result.get("sha256")),
        "cost": _number(result.get("cost")),
        "predict_time": _number(result.get("predict_time")),
    }
    paths = result.get("stored_paths")
    if isinstance(paths, list) and len(paths) > 1:
        extra["stored_paths"] = [_location(path) for path in paths[:MAX_LISTED_ITEMS]]
    return extra


def batch_extra(
    summary: Mapping[str, Any], model: str, stored: list[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The extra of a batch's Asset event: counts, spend and the results manifest, and its stored
    files (key, prediction id, path, sha256) when ``stored`` is given (at most ``MAX_LISTED_ITEMS``)."""
    extra: dict[str, Any] = {
        "model": _text(model),
        "batch": True,
        "results_path": _location(summary.get("results_path")),
        "items": _number(summary.get("items")),
        "succeeded": _number(summary.get("succeeded")),
        "failed": _number(summary.get("failed")),
        "invalid": _number(summary.get("invalid")),
        "cost": _number(summary.get("spend")),
        "listed": stored is not None,
    }
    if stored is not None:
        extra["predictions"] = [
            {
                "key": _text(row.get("key")),
                "prediction_id": _text(row.get("prediction_id")),
                "stored_path": _location(row.get("stored_path")),
                "sha256": _text(row.get("sha256")),
            }
            for row in stored[:MAX_LISTED_ITEMS]
        ]
    return extra


def file_uri(path: str) -> str | None:
    """The URI of a stored file, as its Asset's: ``file://`` + the absolute path for a local path, the
    object-storage URI without its connection id, query or fragment otherwise; None past Airflow's
    1,500 characters."""
    if "://" in path:
        parts = urlsplit(path)
        netloc = parts.netloc.rpartition("@")[2]
        uri = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    else:
        from pathlib import Path

        uri = Path(path).absolute().as_uri()
    return uri if len(uri) <= _MAX_URI_CHARS else None


# --- the outlets ------------------------------------------------------------------------------------


def _targets(context: Context) -> tuple[list[Any], list[Any]] | None:
    """The task's Asset outlets (Assets and references to them) and its AssetAliases; None when it has
    neither, or the context offers no outlet events (a test's stand-in context)."""
    outlets = getattr(context.get("task"), "outlets", None)
    if not outlets or context.get("outlet_events") is None:
        return None
    from airflow.sdk import Asset, AssetAlias
    from airflow.sdk.definitions.asset import AssetRef

    assets = [outlet for outlet in outlets if isinstance(outlet, (Asset, AssetRef))]
    aliases = [outlet for outlet in outlets if isinstance(outlet, AssetAlias)]
    return (assets, aliases) if assets or aliases else None


def _emit(
    context: Context,
    targets: tuple[list[Any], list[Any]],
    extra: dict[str, Any],
    files: Callable[[], list[tuple[str, dict[str, Any]]]],
    log: Any,
    total_files: int | None = None,
) -> None:
    """Set ``extra`` on each Asset outlet's event and attach each file to each AssetAlias; a failing
    outlet is logged and skipped, the others still get theirs."""
    events = context["outlet_events"]
    assets, aliases = targets
    for asset in assets:
        try:
            accessor = events[asset]
            accessor.extra = {**accessor.extra, **extra}
        except Exception as error:
            log.warning("Could not set the extra of the asset event of %r: %s", asset, error)
    if not aliases:
        return
    from airflow.sdk import Asset

    stored = files()
    attached = stored[:MAX_ALIAS_ASSETS]
    total = max(total_files or 0, len(stored))
    if total > MAX_ALIAS_ASSETS:
        log.warning(
            "%d files were stored: the asset aliases get an Asset for the first %d only (the results "
            "manifest lists every one)",
            total,
            MAX_ALIAS_ASSETS,
        )
    for alias in aliases:
        try:
            accessor = events[alias]
            for path, file_extra in attached:
                uri = file_uri(path)
                if uri is None:
                    log.warning("Stored file %s has a URI too long for an Asset: not attached", path)
                    continue
                accessor.add(Asset(uri=uri, name=uri), extra=file_extra)
        except Exception as error:
            log.warning("Could not attach the stored files to the asset alias %r: %s", alias, error)
    log.info(
        "Asset events: %d asset(s) name prediction(s) of %s; %d stored file(s) attached to %d alias(es)",
        len(assets),
        extra.get("model"),
        len(attached),
        len(aliases),
    )


def _prediction_files(
    result: Mapping[str, Any], extra: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Each file a prediction stored, with the extra of its Asset: the first file's sha256 is known."""
    paths = result.get("stored_paths")
    if not (isinstance(paths, list) and paths):
        paths = [result["stored_path"]] if isinstance(result.get("stored_path"), str) else []
    base = {key: extra.get(key) for key in ("model", "prediction_id", "cost")}
    return [
        (str(path), {**base, "stored_path": _location(path), "sha256": extra["sha256"] if i == 0 else None})
        for i, path in enumerate(paths)
        if isinstance(path, str)
    ]


def _stored_rows(rows: Iterable[Mapping[str, Any]], limit: int) -> Iterable[Mapping[str, Any]]:
    """The manifest's rows of stored items, at most ``limit``: the manifest is read no further."""
    count = 0
    for row in rows:
        if row.get("status") == "success" and isinstance(row.get("stored_path"), str):
            yield row
            count += 1
            if count >= limit:
                return


def _item_extra(model: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": _text(model),
        "key": _text(row.get("key")),
        "prediction_id": _text(row.get("prediction_id")),
        "stored_path": _location(row.get("stored_path")),
        "sha256": _text(row.get("sha256")),
        "cost": _number(row.get("cost")),
    }


# --- values: small, JSON, nothing secret --------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value[:_MAX_URI_CHARS] if isinstance(value, str) else None


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _location(value: Any) -> str | None:
    """A stored file's path as the task was given it, without a password, query or fragment."""
    if not isinstance(value, str):
        return None
    if "://" in value:
        parts = urlsplit(value)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:_MAX_URI_CHARS]
    return value[:_MAX_URI_CHARS]

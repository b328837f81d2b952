"""Any model's input checked against the JSON Schema the API publishes for it, before it is paid for.

``GET /v1/model?slug=...`` answers the model's ``request_schema``. A typo in a field name or a value
out of range then fails on the worker with the field's path, the value and the rule, and no create,
instead of a failed prediction minutes later. Each schema is kept per process for a while (one GET
per model per worker process, not per task). When it cannot be fetched the input is sent as is: the
API still validates it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_eachlabs.exceptions import EachlabsError, EachlabsInputError

SCHEMA_TTL_SECONDS = 600.0

_schemas: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
_lock = threading.Lock()


def published_schema(
    host: str, model: str, fetch: Callable[[str], Mapping[str, Any]], log: Any
) -> dict[str, Any] | None:
    """The model's ``request_schema`` from ``fetch(model)`` (the hook's ``get_model``), cached per process.

    None, with a warning, when it cannot be had; a failed fetch is remembered for the same while, so
    a batch of tasks against an API without the route does not ask again and again.
    """
    key = (host, model)
    with _lock:
        cached = _schemas.get(key)
    if cached is not None and time.monotonic() - cached[0] < SCHEMA_TTL_SECONDS:
        return cached[1]
    schema: dict[str, Any] | None = None
    try:
        found = fetch(model).get("request_schema")
        if isinstance(found, dict):
            schema = found
        else:
            log.warning("Model %s publishes no input schema: its input is sent unchecked", model)
    except EachlabsError as error:
        log.warning(
            "Could not read the input schema of model %s (%s): the input is sent unchecked, and the API "
            "still validates it",
            model,
            error,
        )
    with _lock:
        _schemas[key] = (time.monotonic(), schema)
    return schema


def check_against_schema(input: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise ``EachlabsInputError`` naming the first broken rule's field path, value and rule."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError:
        return  # a schema the API got wrong is not the DAG's fault; the API still validates
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(dict(input)))
    if error is None:
        return
    path = "input" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )
    field, value, rule = _describe(error, path)
    raise EachlabsInputError(field, value, f"{rule} (the model's published input schema)")


def _describe(error: Any, path: str) -> tuple[str, Any, str]:
    """Field, value and rule in the words the provider's other input errors use."""
    keyword, expected, value = error.validator, error.validator_value, error.instance
    if keyword == "required" and isinstance(value, Mapping):
        missing = next((name for name in expected if name not in value), "?")
        return f"{path}.{missing}", None, "is required"
    if keyword == "additionalProperties" and isinstance(value, Mapping):
        known = sorted(error.schema.get("properties", {}))
        extra = next((name for name in value if name not in known), "?")
        return (
            f"{path}.{extra}",
            value.get(extra),
            f"is not an input of this model (its inputs: {', '.join(known)})",
        )
    rules = {
        "maximum": f"must be at most {expected}",
        "minimum": f"must be at least {expected}",
        "exclusiveMaximum": f"must be less than {expected}",
        "exclusiveMinimum": f"must be more than {expected}",
        "type": f"must be of type {expected}",
        "enum": f"must be one of {', '.join(map(str, expected))}" if isinstance(expected, list) else "",
        "minLength": f"must be at least {expected} characters long",
        "maxLength": f"must be at most {expected} characters long",
        "pattern": f"must match the pattern {expected}",
    }
    return path, value, rules.get(keyword) or error.message

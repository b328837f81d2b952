"""``help(EachlabsHook)`` is enough to use it: every public method says what it returns, what it raises
and how it is called."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook


def public_methods() -> dict[str, Any]:
    """The methods and properties ``EachlabsHook`` itself defines (not ``BaseHook``'s)."""
    return {
        name: value.fget if isinstance(value, property) else value
        for name, value in vars(EachlabsHook).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def test_the_hook_has_the_methods_the_readme_table_lists():
    assert sorted(public_methods()) == [
        "acancel_prediction",
        "aget_prediction",
        "aget_settings",
        "amask_secrets",
        "answer_at_once",
        "cancel_prediction",
        "create_prediction",
        "download",
        "find_prediction",
        "get_model",
        "get_prediction",
        "host",
        "list_executions",
        "mask_secrets",
        "redact",
        "redact_also",
        "settings",
        "submit_prediction",
        "test_connection",
        "upload_bytes",
        "upload_file",
        "wait_for_prediction",
    ]


@pytest.mark.parametrize("name", sorted(public_methods()))
def test_every_public_method_documents_its_answer_its_errors_and_an_example(name: str):
    doc = inspect.getdoc(public_methods()[name]) or ""
    assert "Example::" in doc, name
    # The async counterparts refer to their sync method for arguments, answer and errors.
    assert ":return" in doc or "same" in doc, name
    assert ":raises" in doc or "Raises nothing" in doc or "errors" in doc, name


@pytest.mark.parametrize("name", sorted(public_methods()))
def test_every_parameter_is_documented_and_every_documented_one_exists(name: str):
    method = public_methods()[name]
    doc = inspect.getdoc(method) or ""
    if ":return" not in doc:
        pytest.skip("documented as its sync counterpart")
    documented = {
        line.split(":param ", 1)[1].split(":", 1)[0] for line in doc.splitlines() if ":param " in line
    }
    assert documented == set(inspect.signature(method).parameters) - {"self"}

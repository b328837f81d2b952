"""The provider as Airflow discovers it: entry point data, connection form, and cheap imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

from airflow_provider_eachlabs import __version__, get_provider_info


def test_every_module_and_class_named_in_provider_info_imports():
    info = get_provider_info()
    modules = [
        m
        for group in ("operators", "sensors", "hooks", "triggers")
        for e in info[group]
        for m in e["python-modules"]
    ]
    for module in modules:
        importlib.import_module(module)
    decorators = [d["class-name"] for d in info["task-decorators"]]
    for dotted in [*info["extra-links"], info["connection-types"][0]["hook-class-name"], *decorators]:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
    assert info["versions"] == [__version__]


def test_connection_form_is_declarative_with_the_key_labelled_and_unused_fields_hidden():
    conn = get_provider_info()["connection-types"][0]
    assert (conn["connection-type"], conn["hook-name"]) == ("eachlabs", "Eachlabs")
    behaviour = conn["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "API Key"
    assert set(behaviour["hidden-fields"]) == {"schema", "port", "login", "extra"}
    assert set(conn["conn-fields"]) == {"timeout", "max_retries", "backoff_max"}


def test_airflow_providers_manager_sees_the_hook_and_form_without_importing_it():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-eachlabs" in manager.providers
    assert manager.hooks["eachlabs"].hook_class_name.endswith("EachlabsHook")
    assert "extra__eachlabs__timeout" in manager.connection_form_widgets
    assert manager.field_behaviours["eachlabs"]["relabeling"]["password"] == "API Key"


def test_dag_file_imports_stay_cheap():
    """What a DAG file imports must not drag in HTTP clients, tenacity or Pillow."""
    code = (
        "import sys, airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_eachlabs.operators.flux_fill, airflow_provider_eachlabs.sensors.prediction\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = {"requests", "aiohttp", "httpx", "tenacity", "PIL", "urllib3", "fastapi", "uvicorn"}
    assert not heavy & {name.split(".")[0] for name in loaded}


def test_loading_the_ui_plugin_in_a_task_process_builds_no_web_app():
    """Airflow loads entry-point plugins in every task process: ours loads the class, not its app."""
    code = (
        "import sys, airflow.sdk\n"
        "from airflow.sdk.execution_time import task_runner\n"
        "from airflow.sdk._shared.plugins_manager import _load_entrypoint_plugins\n"
        "before = set(sys.modules)\n"
        "plugins, errors = _load_entrypoint_plugins()\n"
        "print([p.name for p in plugins], errors)\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    found, loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Other installed providers' plugins load beside it (OpenLineage's, from the test extra).
    assert "'eachlabs'" in found and found.endswith("] {}"), found
    web = {"fastapi", "starlette", "jinja2", "sqlalchemy"}
    heavy = {"requests", "aiohttp", "httpx", "tenacity", "PIL", *web}
    assert not heavy & {name.split(".")[0] for name in loaded.split()}
    assert "airflow_provider_eachlabs.plugin.app" not in loaded.split()

"""Dependencies point down: the layers import one way, and no two modules need each other.

Every import statement counts, lazy ones inside functions and ``TYPE_CHECKING`` ones too: a cycle
there is still two modules that each need the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_eachlabs"
NAME = PACKAGE.name


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name not in (module, NAME):
                found.add(name)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def reaches(start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(GRAPH[start])
    while stack:
        module = stack.pop()
        if module not in seen:
            seen.add(module)
            stack.extend(GRAPH[module])
    return seen


def test_no_module_reaches_itself_through_its_imports():
    cycles = sorted(module for module in GRAPH if module in reaches(module))
    assert cycles == []


BOTTOM = [
    "exceptions",
    "redaction",
    "addresses",
    "settings",
    "api",
    "reruns",
    "polling",
    "imageinfo",
    "retrying",
]
TRANSPORTS = ["transport.sync", "transport.aio", "transport.body", "transport.failures"]


@pytest.mark.parametrize("module", BOTTOM + TRANSPORTS)
def test_the_protocol_and_transports_import_nothing_above_them(module: str):
    above = {
        f"{NAME}.{m}" for m in ("hooks.eachlabs", "operators.prediction", "sensors.prediction", "storage")
    }
    assert reaches(f"{NAME}.{module}").isdisjoint(above)


@pytest.mark.parametrize(
    "module",
    ["exceptions", "redaction", "addresses", "api", "reruns", "polling", "imageinfo", "transport.body"],
)
def test_the_protocol_core_imports_no_airflow_and_no_http_library(module: str):
    tree = ast.parse(MODULES[f"{NAME}.{module}"].read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported.isdisjoint({"airflow", "requests", "aiohttp", "urllib3", "httpx"})


def test_the_sensor_does_not_import_the_operators():
    assert not {m for m in reaches(f"{NAME}.sensors.prediction") if m.startswith(f"{NAME}.operators")}


def test_only_airflow_imports_the_ui_plugin():
    """The plugin sits on top: no operator, hook or trigger may need the api-server's code."""
    plugin = {module for module in MODULES if module.startswith(f"{NAME}.plugin")}
    below = [module for module in MODULES if module not in plugin]
    assert [module for module in below if reaches(module) & plugin] == []

"""What ``pip install airflow-provider-eachlabs`` gets: the wheel and sdist, checked as a user gets them.

An editable install hides packaging mistakes (a missing ``py.typed``, a simulator left out of the
wheel, a broken entry point), so this builds both distributions with ``python -m build``, runs
``twine check --strict``, reads the wheel's file list and entry points, then installs the wheel
alone into a fresh venv — away from the source tree, so nothing can be imported from it — and asks
Airflow there whether it sees the provider.

Needs the ``build`` and ``twine`` packages (``make package-check`` installs them); skipped without.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, require

DIST_NAME = "airflow_provider_eachlabs"


def _run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Wheel and sdist built from the working tree into a private folder."""
    for module in ("build", "twine"):
        try:
            __import__(module)
        except ImportError:
            require(False, f"the {module} package is not installed (make package-check installs it)")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], ROOT, timeout=600)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_metadata_passes_twine_check(dists: dict[str, Path]) -> None:
    """PyPI would accept both files, README rendering included."""
    output = _run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])],
        ROOT,
        timeout=120,
    )
    assert output.count("PASSED") == 2, output


def test_wheel_carries_simulator_types_and_entry_point(dists: dict[str, Path]) -> None:
    """The simulator ships for users' own tests, py.typed for their mypy, the entry points (provider
    and UI plugin) for Airflow, the plugin's templates for the api-server."""
    from airflow_provider_eachlabs import __version__

    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = f"{DIST_NAME}-{__version__}.dist-info"
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        metadata = wheel.read(f"{info}/METADATA").decode()
    for required in (
        f"{DIST_NAME}/py.typed",
        f"{DIST_NAME}/__init__.py",
        f"{DIST_NAME}/testing/__init__.py",
        f"{DIST_NAME}/testing/__main__.py",
        f"{DIST_NAME}/testing/pytest_plugin.py",
        f"{DIST_NAME}/testing/server.py",
        *(f"{DIST_NAME}/plugin/templates/{page}.html" for page in ("base", "task", "overview")),
    ):
        assert required in names, f"{required} missing from the wheel"
    assert not any(name.startswith(("tests/", "example_dags/", "benchmarks/")) for name in names), names
    assert "[apache_airflow_provider]" in entry_points, entry_points
    assert "provider_info = airflow_provider_eachlabs:get_provider_info" in entry_points, entry_points
    assert "[airflow.plugins]\neachlabs = airflow_provider_eachlabs.plugin:EachlabsPlugin" in entry_points
    assert f"Version: {__version__}" in metadata
    assert "Requires-Dist: apache-airflow>=" in metadata
    assert "Provides-Extra: simulator" in metadata


def test_sdist_is_complete(dists: dict[str, Path]) -> None:
    """The sdist rebuilds the same package: sources, py.typed, simulator, README and licence metadata."""
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for required in (
        "pyproject.toml",
        "README.md",
        f"{DIST_NAME}/py.typed",
        f"{DIST_NAME}/testing/server.py",
        "example_dags/example_flux_fill.py",
    ):
        assert required in names, f"{required} missing from the sdist"


def test_fresh_venv_with_only_the_wheel(dists: dict[str, Path], tmp_path: Path) -> None:
    """``pip install <wheel>`` in a new venv: it imports, and ``airflow providers list`` shows it."""
    from airflow_provider_eachlabs import __version__

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", f"{dists['wheel']}[simulator]"], tmp_path, 900)
    # Run from an empty folder so nothing can come from the source tree.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    code = (
        "import airflow_provider_eachlabs as p, airflow_provider_eachlabs.testing as t;"
        "from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator;"
        "from airflow_provider_eachlabs.testing import EachlabsSimulator;"
        "print(p.__file__, p.__version__)"
    )
    printed = _run([str(python), "-c", code], workdir, 120).split()
    assert printed[0].startswith(str(env_dir)) and printed[1] == __version__, printed
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    listed = _run(
        [str(env_dir / "bin" / "airflow"), "providers", "list", "--output", "json"], workdir, 300, env=env
    )
    providers = {p["package_name"]: p["version"] for p in json.loads(listed[listed.index("[") :])}
    assert providers.get("airflow-provider-eachlabs") == __version__, providers
    plugins = _run([str(env_dir / "bin" / "airflow"), "plugins", "--output", "json"], workdir, 300, env=env)
    assert '"name": "eachlabs"' in plugins and '"url_prefix": "/eachlabs"' in plugins, plugins

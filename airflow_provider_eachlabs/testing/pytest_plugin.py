"""Opt-in pytest fixture: add ``pytest_plugins = ["airflow_provider_eachlabs.testing.pytest_plugin"]``.

It is deliberately not a pytest11 entry point, so installing the provider never changes the
behaviour of unrelated test suites.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_eachlabs.testing.server import EachlabsSimulator


@pytest.fixture
def eachlabs_simulator() -> Iterator[EachlabsSimulator]:
    """A fresh simulator per test (key "sim-key"), fast enough that polling tests stay short."""
    with EachlabsSimulator(predict_seconds=0.3) as sim:
        yield sim

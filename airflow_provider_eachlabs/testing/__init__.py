"""A local Eachlabs API simulator for tests, demos and benchmarks.

It answers the prediction, upload and model routes of https://api.eachlabs.ai over real HTTP,
with a real (Pillow) fill for flux-fill-pro and scriptable faults, so the provider can be tested
end to end without network access or an API key. Needs the ``simulator`` extra (Pillow).
"""

from __future__ import annotations

from airflow_provider_eachlabs.testing.faults import Fault
from airflow_provider_eachlabs.testing.server import EachlabsSimulator
from airflow_provider_eachlabs.testing.state import Counters, PredictionRecord

__all__ = ["Counters", "EachlabsSimulator", "Fault", "PredictionRecord"]

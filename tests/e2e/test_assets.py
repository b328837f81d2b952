"""Asset events in a real Airflow: a fill with an Asset in ``outlets`` names its prediction in the
event's extra, and a DAG scheduled on that Asset runs on the event and reads the same names.

Triggered and read over REST only: the producer's XCom, the Asset events (``/api/v2/assets/events``),
the consumer run the event created and its XCom. Simulator counters are deltas: the suite shares one
stack.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.e2e.conftest import API_KEY, AirflowStack, wait_for
from tests.e2e.rest import wait_parsed

PRODUCER, CONSUMER = "eachlabs_asset_producer_e2e", "eachlabs_asset_consumer_e2e"
ASSET = "eachlabs_e2e_asset_fills"


def events_of(stack: AirflowStack, run_id: str) -> list[dict[str, Any]]:
    answer = stack.api.get(
        "/assets/events", params={"source_dag_id": PRODUCER, "source_run_id": run_id, "limit": 100}
    )
    return list(answer["asset_events"])


def test_the_fill_names_its_prediction_in_the_asset_event_and_the_consumer_reads_it(
    dags_ready: AirflowStack,
) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    wait_parsed(stack, PRODUCER, CONSUMER)
    sim = stack.fast_sim
    creates_before = sim.counters.create_requests
    run_id = stack.api.trigger(PRODUCER)
    state = stack.api.wait_run(PRODUCER, run_id, 180)
    assert state == "success", (stack.api.log(PRODUCER, run_id, "fill"), stack.logs())
    assert sim.counters.create_requests - creates_before == 1

    result = stack.api.xcom(PRODUCER, run_id, "fill", "return_value")
    prediction_id, stored = result["prediction_id"], result["stored_path"]
    assert Path(stored).name == f"{prediction_id}.png"
    sha256 = hashlib.sha256(Path(stored).read_bytes()).hexdigest()

    # The Asset's event, over REST: its extra names the prediction, the file and what it cost.
    events = events_of(stack, run_id)
    (event,) = [e for e in events if e["uri"] == ASSET]
    assert event["extra"] == {
        "model": "flux-fill-pro",
        "prediction_id": prediction_id,
        "status": "success",
        "stored_path": stored,
        "sha256": sha256,
        "cost": result["cost"],
        "predict_time": result["predict_time"],
    }, event
    assert API_KEY not in repr(events) and "/files/outputs/" not in repr(events)  # no key, no output URL
    # The AssetAlias: the stored file is an Asset of its own, its URI the file's.
    (attached,) = [e for e in events if e["uri"] == Path(stored).as_uri()]
    assert (attached["extra"]["prediction_id"], attached["extra"]["sha256"]) == (prediction_id, sha256)

    # The consumer run the event created, and what its task read from the event.
    def consumer_run() -> str | None:
        (current,) = [e for e in events_of(stack, run_id) if e["uri"] == ASSET]
        runs = [r["run_id"] for r in current["created_dagruns"] if r["dag_id"] == CONSUMER]
        return runs[0] if runs else None

    consumer_run_id = wait_for(
        "the Asset event to create a consumer run", consumer_run, timeout=120, interval=1
    )
    state = stack.api.wait_run(CONSUMER, consumer_run_id, 180)
    assert state == "success", (stack.api.log(CONSUMER, consumer_run_id, "publish"), stack.logs())
    published = stack.api.xcom(CONSUMER, consumer_run_id, "publish", "return_value")
    assert {"prediction_id": prediction_id, "stored_path": stored} in published, published

"""Keeping what a succeeded prediction made: every output file stored where the task asked.

The operators and the sensor share this, so a fill waited for by ``PredictionSensor`` is stored
exactly as one waited for by the operator. Output URLs may expire (BFL's own expire after ten
minutes), so the files are downloaded as soon as the prediction succeeds. A model that returns
several files has each stored; the first keeps the plain name.

A write that fails after the prediction was paid for is an ``EachlabsStorageError`` that names the
prediction and where its image still is: not final, since the task's next try re-attaches to the same
prediction and stores it without buying again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs import storage
from airflow_provider_eachlabs.assets import announce_prediction
from airflow_provider_eachlabs.exceptions import EachlabsError, EachlabsInputError, EachlabsStorageError
from airflow_provider_eachlabs.results import OUTCOME_KEY, prediction_summary, report_success, success_outcome

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.api import Prediction


def check_output_locations(locations: Mapping[str, str], output_name: str | None) -> None:
    """Before anything is uploaded or bought: ``output_name`` must be a plain name, and every place
    the task will write (by parameter name) must be writable."""
    if output_name and not storage.check_file_stem(output_name):
        raise EachlabsInputError("output_name", output_name, storage.FILE_STEM_RULE)
    for field, location in locations.items():
        storage.check_writable(field, location)


def finished_result(
    context: Context,
    prediction: Prediction,
    *,
    model: str | None,
    output_path: str | None,
    name: str,
    fetch: Callable[[str], bytes],
    expected_format: str | None,
    log: Any,
) -> dict[str, Any]:
    """A succeeded prediction's XCom result, its success reported once and its outputs stored.

    The result is also left as ``eachlabs_outcome`` for the UI plugin's pages, and named in the extra of
    the task's outlet Asset events (``assets``).
    """
    report_success(context, prediction, log)
    result = prediction_summary(prediction)
    if model is not None:
        result["model"] = model
    if output_path:
        result.update(
            store_outputs(
                prediction, output_path, name=name, fetch=fetch, expected_format=expected_format, log=log
            )
        )
    context["ti"].xcom_push(key=OUTCOME_KEY, value=success_outcome(result))
    announce_prediction(context, result, log=log)
    return result


def store_outputs(
    prediction: Prediction,
    output_path: str,
    *,
    name: str,
    fetch: Callable[[str], bytes],
    expected_format: str | None,
    log: Any,
) -> dict[str, Any]:
    """Download, check and store every output file; return the XCom fields that describe them.

    ``name`` is the stem of the stored files (the prediction id, or the task's ``output_name``).
    With several outputs and a ``output_path`` that names one file, only the first is stored: the
    others stay listed in ``output_urls``.
    """
    urls = prediction.output_urls
    if len(urls) > 1 and not storage.is_folder_like(output_path):
        log.warning(
            "Prediction %s made %d files but output_path names one file: only the first is stored",
            prediction.id,
            len(urls),
        )
        urls = urls[:1]
    stored: list[storage.StoredOutput] = []
    for index, url in enumerate(urls):
        content = fetch(url)
        where = f"{url} of prediction {prediction.id}"
        info = storage.check_output(content, expected_format, where)
        target = storage.output_target(output_path, name if index == 0 else f"{name}_{index}", info.kind)
        try:
            stored.append(storage.store_output(content, info, target))
        except EachlabsError:
            raise
        except Exception as error:
            raise EachlabsStorageError(
                f"Prediction {prediction.id} succeeded, but its output could not be written to {target} "
                f"({storage.reason(error)}). The image is at {url} while that URL lasts; the task's next "
                "try stores it without buying another prediction.",
                prediction_id=prediction.id,
                output_url=url,
            ) from None
        log.info("Stored the output of prediction %s at %s", prediction.id, target)
    if not stored:
        return {}
    fields = stored[0].to_dict()
    if len(stored) > 1:
        fields["stored_paths"] = [item.path for item in stored]
    return fields

"""What to do about a failed fill, in the README's troubleshooting words, for the task page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_eachlabs.api import FailureCause, failure_cause

_BY_CAUSE = {
    FailureCause.CONTENT_POLICY: "The provider's content policy rejected the input. Change the prompt or the "
    "images; retrying the same input cannot help, so the task was not retried.",
    FailureCause.INPUT: "The model rejected the input. Check the image, the mask (same size, white is "
    "filled) and the parameters; the task was not retried.",
    FailureCause.TRANSIENT: "The model failed for a passing reason. The task's next try buys a fresh "
    "prediction; if it keeps failing, quote the request id to Eachlabs support.",
    FailureCause.UNKNOWN: "The model failed without a reason the provider knows. The task's next try buys "
    "a fresh prediction (unless retry_unknown_failures=False); quote the request id to Eachlabs support.",
}
_BY_STATUS = {
    "cancelled": "Someone cancelled the prediction (the Eachlabs dashboard, or a kill of the task); it was "
    "not retried.",
    "timeout": "The prediction did not finish within the task's timeout and was cancelled. Raise timeout "
    "for long runs.",
}
_BY_ERROR = {
    "EachlabsAuthError": "The API key is wrong, revoked or not allowed: check it in the Eachlabs dashboard "
    "and in the connection's API Key field.",
    "EachlabsPaymentRequiredError": "The account balance is too low: top it up.",
    "EachlabsRateLimitError": "The key's rate or concurrency cap: size the eachlabs pool to 10 or fewer.",
    "EachlabsStorageError": "The output could not be written where output_path says; the image is at its "
    "output URL while that lasts. The task's next try stores it without buying again.",
    "EachlabsDownloadError": "The output was refused: an unsafe address, or larger than max_output_bytes.",
    "EachlabsOutputError": "The output is not a whole image of the format asked for; nothing was stored.",
    "EachlabsUnsafeAnswerError": "The API host answered something the provider does not act on (a redirect, "
    "an unsafe id): check the connection's host and any proxy in front of it.",
    "EachlabsServerError": "The API failed; the task's own retries take over.",
    "EachlabsConnectionError": "The API or the network failed; the task's own retries take over.",
    "ReviewRejected": "A reviewer rejected the fill; nothing was stored. Change the prompt or the images "
    "and clear the task to buy and review a new fill.",
    "ReviewRoundsExhausted": "The review asked for more re-fills than max_review_rounds allows; nothing "
    "more was bought. Raise max_review_rounds, or clear the task to review again.",
    "EachlabsBudgetError": "The next prediction would have taken the task past its max_cost, so it was "
    "not bought. Raise max_cost, or buy fewer predictions.",
}


def advice(outcome: Mapping[str, Any]) -> str:
    """One or two sentences: what the failure means and what to do."""
    error_class = str(outcome.get("error_class") or "")
    if error_class in _BY_ERROR:
        return _BY_ERROR[error_class]
    status = str(outcome.get("status") or "")
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    code = outcome.get("error_code")
    return _BY_CAUSE[failure_cause(code if isinstance(code, str) else None)]

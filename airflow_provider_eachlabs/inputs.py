"""flux-fill-pro's input schema as its model page states it, checked before any network call.

A fill that the API would reject costs a round trip and, in a batch, a retry storm; a fill with a
local path where a URL belongs never worked. Both fail here, on the worker, with a message that names
the field, the value and the rule, and without Airflow retries (``EachlabsInputError`` is final).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from airflow_provider_eachlabs.addresses import PUBLIC_URL_RULE, is_api_host_url, is_public_https_url
from airflow_provider_eachlabs.exceptions import EachlabsInputError

OUTPUT_FORMATS = ("jpg", "png")
# The model page documents no length for the prompt; this is the provider's own cap on free text, so
# that a template that pulled a whole document (or a runaway loop's output) into the prompt fails here
# instead of being bought, sent in every retry and kept in XCom. No sensible prompt comes near it.
MAX_PROMPT_CHARS = 10_000
_INT_LITERAL = re.compile(r"[+-]?\d+")
_NUMBER_LITERAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def require_int(field: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An integer, or the canonical text of one (templates render to text); never a bool."""
    if isinstance(value, str) and _INT_LITERAL.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise EachlabsInputError(field, value, f"must be an integer{_range_text(low, high)}")
    _check_range(field, value, number, low, high)
    return number


def require_number(field: str, value: Any, low: float, high: float) -> float | int:
    """An int or float (or the text of one); never a bool, NaN or infinity."""
    number: float | int
    if isinstance(value, str) and _NUMBER_LITERAL.fullmatch(value.strip()):
        text = value.strip()
        number = int(text) if _INT_LITERAL.fullmatch(text) else float(text)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    else:
        raise EachlabsInputError(field, value, f"must be a number{_range_text(low, high)}")
    if number != number or number in (float("inf"), float("-inf")):
        raise EachlabsInputError(field, value, f"must be a finite number{_range_text(low, high)}")
    _check_range(field, value, number, low, high)
    return number


def require_bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise EachlabsInputError(field, value, "must be a boolean (true or false)")


RENDERED_NOTHING = "a template probably pulled nothing (check the task_ids and key of its xcom_pull)"


def require_text(field: str, value: Any, max_chars: int | None = None) -> str:
    """Non-empty text, of at most ``max_chars`` characters when given. Empty text or the word
    ``None`` is what a template renders when its ``xcom_pull`` found nothing: refused, so nobody pays
    for a fill of the prompt "None"."""
    if isinstance(value, str) and value.strip() in ("", "None"):
        raise EachlabsInputError(field, value, f"must be a non-empty string; {RENDERED_NOTHING}")
    if not isinstance(value, str):
        raise EachlabsInputError(field, value, "must be a non-empty string")
    if max_chars is not None and len(value) > max_chars:
        raise EachlabsInputError(
            field, value, f"must be at most {max_chars:,} characters (it has {len(value):,})"
        )
    return value


def require_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise EachlabsInputError(field, value, f"must be one of {', '.join(choices)}")
    return value


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high} inclusive"
    if low is not None:
        return f" of at least {low}"
    return ""


def _check_range(field: str, raw: Any, number: float, low: float | None, high: float | None) -> None:
    if (low is not None and number < low) or (high is not None and number > high):
        raise EachlabsInputError(field, raw, f"must be{_range_text(low, high)}")


def is_web_reference(value: str) -> bool:
    """Whether the API is meant to fetch ``value`` itself, rather than the provider uploading it."""
    scheme = value.strip().split(":", 1)[0].lower() if ":" in value else ""
    return scheme in ("http", "https", "data")


def check_image_source(field: str, value: Any, api_host: str | None = None) -> str:
    """A web URL must pass the URL rules now; anything else is a file the provider uploads later."""
    text = require_text(field, value)
    return check_public_image_url(field, text, api_host) if is_web_reference(text) else text


def check_public_image_url(field: str, value: Any, api_host: str | None = None) -> str:
    """A URL the API can fetch: public HTTPS, never a data URI, loopback or private address.

    The configured API host's own files are the exception: uploads land there (and, against the
    simulator, that host is a loopback address).
    """
    text = require_text(field, value)
    if is_api_host_url(text, api_host) or is_public_https_url(text):
        return text
    raise EachlabsInputError(field, value, PUBLIC_URL_RULE)


@dataclass(frozen=True)
class FluxFillInput:
    """The flux-fill-pro input, validated: build it with ``FluxFillInput.validate``."""

    prompt: str
    image: str
    mask: str | None = None
    seed: int | None = None
    steps: int = 50
    prompt_upsampling: bool = False
    guidance: float | int = 3
    safety_tolerance: int = 2
    output_format: str = "jpg"

    @classmethod
    def validate(
        cls,
        *,
        prompt: Any,
        image: Any,
        mask: Any = None,
        seed: Any = None,
        steps: Any = 50,
        prompt_upsampling: Any = False,
        guidance: Any = 3,
        safety_tolerance: Any = 2,
        output_format: Any = "jpg",
        api_host: str | None = None,
    ) -> FluxFillInput:
        """Check every field against the model page; ``image``/``mask`` may be URLs or files to upload."""
        return cls(
            prompt=require_text("prompt", prompt, MAX_PROMPT_CHARS),
            image=check_image_source("image", image, api_host),
            mask=None if mask is None else check_image_source("mask", mask, api_host),
            seed=None if seed is None else require_int("seed", seed),
            steps=require_int("steps", steps, 1, 50),
            prompt_upsampling=require_bool("prompt_upsampling", prompt_upsampling),
            guidance=require_number("guidance", guidance, 2, 5),
            safety_tolerance=require_int("safety_tolerance", safety_tolerance, 1, 6),
            output_format=require_choice("output_format", output_format, OUTPUT_FORMATS),
        )

    def to_api(self) -> dict[str, Any]:
        """The ``input`` object for the create request; unset optional fields are left out."""
        body: dict[str, Any] = {
            "prompt": self.prompt,
            "image": self.image,
            "steps": self.steps,
            "prompt_upsampling": self.prompt_upsampling,
            "guidance": self.guidance,
            "safety_tolerance": self.safety_tolerance,
            "output_format": self.output_format,
        }
        if self.mask is not None:
            body["mask"] = self.mask
        if self.seed is not None:
            body["seed"] = self.seed
        return body


# ``EachlabsInputError`` moved to ``exceptions``; it stays importable from here.
__all__ = ["EachlabsInputError", "FluxFillInput", "is_web_reference"]

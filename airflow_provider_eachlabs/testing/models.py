"""The simulator's model catalogue and input validation.

Validation is written out by hand (rather than with jsonschema) so the simulator needs only
Pillow at run time, and so each 400 names the offending field the way the provider's error
messages expect. The JSON Schemas served by GET /v1/model describe the same rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MODELS", "ModelSpec", "ValidationFailure", "check_file_url", "validate_input"]

_IMAGE_TYPES = "image/jpeg, image/png, image/jpg, image/webp"

FLUX_FILL_PRO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt", "image"],
    "additionalProperties": False,
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "description": "Text prompt for image generation"},
        "image": {
            "type": "string",
            "format": "uri",
            "description": f"The image to inpaint. Can contain an alpha mask. ({_IMAGE_TYPES})",
        },
        "mask": {
            "type": "string",
            "format": "uri",
            "description": (
                "A black-and-white image that describes the part of the image to inpaint. Black areas "
                "will be preserved while white areas will be inpainted. Must have the same size as "
                f"image. Optional if you provide an alpha mask in the original image. ({_IMAGE_TYPES})"
            ),
        },
        "seed": {"type": "integer", "description": "Random seed. Set for reproducible generation"},
        "steps": {
            "type": "integer",
            "minimum": 1,
            "maximum": 50,
            "default": 50,
            "description": "Number of diffusion steps.",
        },
        "prompt_upsampling": {
            "type": "boolean",
            "default": False,
            "description": "Automatically modify the prompt for more creative generation",
        },
        "guidance": {
            "type": "number",
            "minimum": 2,
            "maximum": 5,
            "default": 3,
            "description": "Balance between adherence to the text prompt and image quality/diversity.",
        },
        "safety_tolerance": {
            "type": "integer",
            "minimum": 1,
            "maximum": 6,
            "default": 2,
            "description": "Safety tolerance, 1 is most strict and 6 is most permissive",
        },
        "output_format": {
            "type": "string",
            "enum": ["jpg", "png"],
            "default": "jpg",
            "description": "An enumeration.",
        },
    },
}

_IMAGE_URL = {"type": "string", "format": "uri", "description": f"The image. ({_IMAGE_TYPES})"}

UPSCALE_IMAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image"],
    "additionalProperties": False,
    "properties": {
        "image": _IMAGE_URL,
        "scale": {
            "type": "integer",
            "minimum": 2,
            "maximum": 4,
            "default": 2,
            "description": "Upscale factor.",
        },
        "num_outputs": {
            "type": "integer",
            "minimum": 1,
            "maximum": 4,
            "default": 1,
            "description": "How many variants to return (each a file).",
        },
    },
}

DESCRIBE_IMAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image"],
    "additionalProperties": False,
    "properties": {
        "image": _IMAGE_URL,
        "max_words": {"type": "integer", "minimum": 1, "maximum": 50, "default": 20},
        "language": {"type": "string", "enum": ["en", "de", "fr"], "default": "en"},
    },
}

ECHO_TEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {"prompt": {"type": "string", "description": "Optional text, echoed back"}},
}


@dataclass(frozen=True)
class ModelSpec:
    slug: str
    title: str
    output_type: str
    request_schema: dict[str, Any]


MODELS: dict[str, ModelSpec] = {
    "flux-fill-pro": ModelSpec("flux-fill-pro", "Flux Fill Pro", "image", FLUX_FILL_PRO_SCHEMA),
    # Two more image models with published schemas, so the generic operator's schema check and its
    # outputs (a file; an object) are tested on something that is not flux-fill-pro.
    "upscale-image": ModelSpec("upscale-image", "Upscale Image (simulated)", "image", UPSCALE_IMAGE_SCHEMA),
    "describe-image": ModelSpec(
        "describe-image", "Describe Image (simulated)", "object", DESCRIBE_IMAGE_SCHEMA
    ),
    # A model with no real work, so the generic operator has a target whose output is predictable.
    "echo-test": ModelSpec("echo-test", "Echo Test (simulator only)", "object", ECHO_TEST_SCHEMA),
}


class ValidationFailure(ValueError):
    """A 400: `field` is the offending input key, named in the response's details."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"input.{field}: {reason}")
        self.field = field
        self.reason = reason


def _is_int(value: Any) -> bool:
    # JSON has one number type; 3.0 is an integer for JSON Schema, but True is not.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_file_url(field: str, url: Any, own_base_url: str) -> None:
    """File inputs must be public HTTPS URLs, as the real service fetches them from the internet.

    The simulator's own URLs are the exception: they are how tests hand it files.
    """
    if not isinstance(url, str):
        raise ValidationFailure(field, "must be a string (a public HTTPS URL)")
    if not url:
        raise ValidationFailure(field, "must not be empty")
    if url.startswith(own_base_url + "/"):
        return
    if url[:5].lower() == "data:":
        raise ValidationFailure(field, "data URIs are not accepted; upload the file and pass its URL")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise ValidationFailure(field, f"is not a valid URL: {exc}") from exc
    if parts.scheme.lower() != "https":
        raise ValidationFailure(field, "must be an https:// URL")
    if not host:
        raise ValidationFailure(field, "URL has no host")
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        raise ValidationFailure(field, "localhost URLs are not reachable by the service")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return
    if (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_reserved
        or addr.is_unspecified
        or addr.is_multicast
    ):
        raise ValidationFailure(field, f"private or loopback address {host} is not reachable by the service")


def _validate_flux_fill_pro(inp: dict[str, Any], own_base_url: str) -> None:
    props: dict[str, Any] = FLUX_FILL_PRO_SCHEMA["properties"]
    for key in inp:
        if key not in props:
            raise ValidationFailure(key, f"unknown input; accepted inputs are {sorted(props)}")
    for key in FLUX_FILL_PRO_SCHEMA["required"]:
        if key not in inp:
            raise ValidationFailure(key, "is required")
    prompt = inp["prompt"]
    if not isinstance(prompt, str):
        raise ValidationFailure("prompt", "must be a string")
    if not prompt.strip():
        raise ValidationFailure("prompt", "must not be empty")
    check_file_url("image", inp["image"], own_base_url)
    if "mask" in inp:
        check_file_url("mask", inp["mask"], own_base_url)
    if "seed" in inp and not _is_int(inp["seed"]):
        raise ValidationFailure("seed", "must be an integer")
    for key in ("steps", "safety_tolerance", "guidance"):
        if key not in inp:
            continue
        value, rule = inp[key], props[key]
        if rule["type"] == "integer" and not _is_int(value):
            raise ValidationFailure(key, "must be an integer")
        if rule["type"] == "number" and not _is_number(value):
            raise ValidationFailure(key, "must be a number")
        if not rule["minimum"] <= value <= rule["maximum"]:
            raise ValidationFailure(key, f"must be between {rule['minimum']} and {rule['maximum']}")
    if "prompt_upsampling" in inp and not isinstance(inp["prompt_upsampling"], bool):
        raise ValidationFailure("prompt_upsampling", "must be a boolean")
    if "output_format" in inp and inp["output_format"] not in props["output_format"]["enum"]:
        raise ValidationFailure("output_format", "must be one of 'jpg', 'png'")


def _validate_by_schema(schema: dict[str, Any], inp: dict[str, Any], own_base_url: str) -> None:
    """The few JSON Schema rules the simple models' schemas use, written out by hand."""
    props: dict[str, Any] = schema["properties"]
    if schema.get("additionalProperties") is False:
        for key in inp:
            if key not in props:
                raise ValidationFailure(key, f"unknown input; accepted inputs are {sorted(props)}")
    for key in schema.get("required", []):
        if key not in inp:
            raise ValidationFailure(key, "is required")
    for key, rule in props.items():
        if key not in inp:
            continue
        value = inp[key]
        if rule.get("format") == "uri":
            check_file_url(key, value, own_base_url)
        elif rule["type"] == "string" and not isinstance(value, str):
            raise ValidationFailure(key, "must be a string")
        elif rule["type"] == "integer" and not _is_int(value):
            raise ValidationFailure(key, "must be an integer")
        if "enum" in rule and value not in rule["enum"]:
            raise ValidationFailure(key, f"must be one of {rule['enum']}")
        if "minimum" in rule and not rule["minimum"] <= value <= rule["maximum"]:
            raise ValidationFailure(key, f"must be between {rule['minimum']} and {rule['maximum']}")


def validate_input(
    model: str, inp: dict[str, Any], own_base_url: str, *, mask_required: bool = False
) -> None:
    """Raise ValidationFailure for input the real model would refuse.

    ``mask_required``: the model page's stricter reading ("mask: Required: Yes"), under which an
    alpha-masked image without an explicit mask is refused.
    """
    if model == "flux-fill-pro":
        if mask_required and "mask" not in inp:
            raise ValidationFailure("mask", "is required")
        _validate_flux_fill_pro(inp, own_base_url)
    elif model in ("upscale-image", "describe-image"):
        _validate_by_schema(MODELS[model].request_schema, inp, own_base_url)
    elif "prompt" in inp and not isinstance(inp["prompt"], str):
        raise ValidationFailure("prompt", "must be a string")

"""The one redaction every answer of the API passes: what it takes out, and what it leaves."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

from airflow_provider_eachlabs.api import ApiResponse
from airflow_provider_eachlabs.redaction import redact, redact_json

KEY = "sk/live+key 9f8e7d"


def test_every_spelling_of_a_secret_is_replaced_and_short_or_empty_ones_are_left():
    said = f"a {KEY} b {quote(KEY, safe='')} c {json.dumps(KEY)[1:-1]} d {quote_plus(KEY)}"
    assert redact(said, [KEY, None, "", "abcd"]) == "a *** b *** c *** d ***"
    assert redact("abcd efgh", ["abcd"]) == "abcd efgh"


def test_a_secret_containing_another_is_replaced_whole():
    assert redact("x secret-long y", ["secret", "secret-long"]) == "x *** y"


def test_strings_inside_json_values_are_redacted_and_the_rest_kept():
    event = {"status": "failed", "n": 1, "prediction": {"logs": [f"no {KEY}"], KEY: True}}
    assert redact_json(event, [KEY]) == {
        "status": "failed",
        "n": 1,
        "prediction": {"logs": ["no ***"], "***": True},
    }


def test_an_answer_is_redacted_in_its_headers_and_body_but_a_downloaded_image_is_kept():
    answer = ApiResponse(400, {"X-Request-Id": f"r-{KEY}"}, f'{{"error": "bad {KEY}"}}'.encode())
    clean = answer.redacted([KEY])
    assert (clean.headers, clean.content) == ({"X-Request-Id": "r-***"}, b'{"error": "bad ***"}')
    image = ApiResponse(200, {}, f"PNG {KEY}".encode())
    assert image.redacted([KEY], keep_success_body=True) is image
    assert image.redacted([KEY]).content == b"PNG ***"

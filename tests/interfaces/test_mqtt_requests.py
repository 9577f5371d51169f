"""The inbox request format, on bytes alone: what is accepted, and how refusals read."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wactorz.core.errors import ActorNotFound, AskTimeout, MailboxFull, SystemNotRunning
from wactorz.interfaces.mqtt.requests import Request, RequestRefused, error_code, parse_request

LIMIT = 65536


def test_a_request_needs_only_a_message() -> None:
    assert parse_request(b'{"message": {"a": 1}}', LIMIT) == Request({"a": 1})
    full = parse_request(b'{"message": {}, "reply_to": "r/1", "correlation_id": [1, "x"]}', LIMIT)
    assert full == Request({}, "r/1", [1, "x"])


@pytest.mark.parametrize(
    ("payload", "code", "text", "reply_to"),
    [
        (b"\xff\xfe", "bad_request", "not valid JSON", None),
        (b"{", "bad_request", "not valid JSON", None),
        (b'"hi"', "bad_request", "is a JSON string", None),
        (b"[" * 50_000 + b"]" * 50_000, "too_large", "over mqtt.max_payload_bytes=65536", None),
        (b'{"message": {}, "reply_to": "a/#"}', "bad_request", "without wildcards", None),
        (b'{"message": {}, "reply_to": "r", "to": 1}', "bad_request", "unknown key 'to'", "r"),
        (b'{"reply_to": "r"}', "bad_request", '"message" is missing', "r"),
        (b'{"message": 3, "reply_to": "r"}', "bad_request", '"message" is a JSON number', "r"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(
    payload: bytes, code: str, text: str, reply_to: str | None
) -> None:
    with pytest.raises(RequestRefused) as refused:
        parse_request(payload, LIMIT)
    assert refused.value.code == code
    assert text in str(refused.value)
    assert refused.value.reply_to == reply_to


def test_deep_nesting_under_the_size_limit_is_refused_not_a_crash() -> None:
    with pytest.raises(RequestRefused, match="nested too deeply"):
        parse_request(b'{"message": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", LIMIT)


@given(st.binary(max_size=200))
def test_no_payload_raises_anything_but_a_refusal(payload: bytes) -> None:
    with contextlib.suppress(RequestRefused):
        parse_request(payload, LIMIT)


def test_an_error_payload_names_the_code_and_carries_the_correlation_id_back() -> None:
    error = RequestRefused("not_found", "no actor named 'x'", "r", "c-1")
    assert json.loads(error.payload()) == {
        "error": "no actor named 'x'",
        "code": "not_found",
        "correlation_id": "c-1",
    }
    nan = RequestRefused("timeout", "late", "r", float("nan"))
    assert json.loads(nan.payload())["correlation_id"] is None


def test_runtime_errors_map_to_codes() -> None:
    assert error_code(ActorNotFound("x")) == "not_found"
    assert error_code(AskTimeout("x", 1)) == "timeout"
    assert error_code(MailboxFull("x", 1)) == "mailbox_full"
    assert error_code(SystemNotRunning("send")) == "unavailable"

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
REPLIES = "wz/replies"


def test_a_request_needs_only_a_message() -> None:
    assert parse_request(b'{"message": {"a": 1}}', LIMIT, REPLIES) == Request({"a": 1})
    full = parse_request(
        b'{"message": {}, "reply_to": "wz/replies/1", "correlation_id": [1, "x"]}', LIMIT, REPLIES
    )
    assert full == Request({}, "wz/replies/1", [1, "x"])


def _request(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("payload", "code", "text", "reply_to"),
    [
        (b"\xff\xfe", "bad_request", "not UTF-8", None),
        ('{"message": {}}'.encode("utf-16"), "bad_request", "not UTF-8", None),
        ('{"message": {}}'.encode("utf-32"), "bad_request", "not UTF-8", None),
        (b"{", "bad_request", "not valid JSON", None),
        (b'"hi"', "bad_request", "is a JSON string", None),
        (b"[" * 50_000 + b"]" * 50_000, "too_large", "over mqtt.max_payload_bytes=65536", None),
        (_request(message={}, reply_to="wz/replies/#"), "bad_request", "wildcards", None),
        (_request(message={}, reply_to="wz/replies/\ud800"), "bad_request", "surrogate", None),
        (_request(message={}, reply_to="wz/replies/a\x01b"), "bad_request", "control", None),
        (_request(message={}, reply_to="wz/replies/\uffff"), "bad_request", "non-character", None),
        (_request(message={}, reply_to="wz/replies/"), "bad_request", "under wz/replies/", None),
        (_request(message={}, reply_to="wz/replies"), "bad_request", "under wz/replies/", None),
        (_request(message={}, reply_to="wz/nodes/n/status"), "bad_request", "under", None),
        (_request(message={}, reply_to=7), "bad_request", "JSON number, not a topic", None),
        (
            _request(message={}, reply_to="wz/replies/" + "x" * 70_000),
            "too_large",
            "max_payload_bytes",
            None,
        ),
        (
            _request(message={}, reply_to="wz/replies/r", to=1),
            "bad_request",
            "unknown key 'to'",
            "wz/replies/r",
        ),
        (_request(reply_to="wz/replies/r"), "bad_request", '"message" is missing', "wz/replies/r"),
        (
            _request(message=3, reply_to="wz/replies/r"),
            "bad_request",
            "JSON number",
            "wz/replies/r",
        ),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(
    payload: bytes, code: str, text: str, reply_to: str | None
) -> None:
    with pytest.raises(RequestRefused) as refused:
        parse_request(payload, LIMIT, REPLIES)
    assert refused.value.code == code
    assert text in str(refused.value)
    assert refused.value.reply_to == reply_to


def test_deep_nesting_under_the_size_limit_is_refused_not_a_crash() -> None:
    with pytest.raises(RequestRefused, match="nested too deeply"):
        parse_request(b'{"message": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", LIMIT, REPLIES)


@given(st.binary(max_size=200))
def test_no_payload_raises_anything_but_a_refusal(payload: bytes) -> None:
    with contextlib.suppress(RequestRefused):
        parse_request(payload, LIMIT, REPLIES)


@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=40))
def test_a_reply_to_that_passes_is_one_a_broker_accepts(suffix: str) -> None:
    """Whatever string a client puts in reply_to, what passes is a topic under the reply
    prefix, encodable as UTF-8, with none of the code points brokers reject."""
    payload = json.dumps({"message": {}, "reply_to": f"{REPLIES}/{suffix}"}).encode()
    try:
        request = parse_request(payload, LIMIT, REPLIES)
    except RequestRefused as refused:
        unusable = refused
    else:
        unusable = None
    if unusable is not None:
        assert unusable.reply_to is None  # never answered: the reply_to is unusable
        return
    assert request.reply_to is not None
    assert request.reply_to.startswith(f"{REPLIES}/")
    assert "+" not in request.reply_to and "#" not in request.reply_to
    request.reply_to.encode("utf-8")  # no surrogates
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in request.reply_to)
    assert not any(0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE for c in suffix)


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

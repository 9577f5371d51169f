"""Tests for `wactorz.core.ids`: the hybrid logical clock, WID parsing and node names."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wactorz.core.ids import (
    MAX_SEQ,
    WID,
    InvalidWID,
    WIDGenerator,
    is_wid,
    new_wid,
    parse_wid,
    sanitize_node,
)

_NS_PER_MS = 1_000_000
# 2026-11-24T23:32:00.123Z, the moment of the example id in the docs.
_SOME_MS = 1_795_563_120_123
_CANONICAL = re.compile(r"[0-9]{8}T[0-9]{9}\.[0-9]{6}Z-[A-Za-z0-9_]{1,64}")


def _clock_reading(readings: Iterable[int]) -> Callable[[], int]:
    """A fake clock returning *readings* (nanoseconds) one per call."""
    it = iter(readings)
    return lambda: next(it)


def _frozen_clock(ms: int) -> Callable[[], int]:
    return lambda: ms * _NS_PER_MS


def _ms_of(wid: WID) -> int:
    return (wid.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@attrs.define
class _ReferenceClock:
    """The hybrid logical clock in its plainest form, to check the generator against."""

    last_ms: int = -1
    seq: int = MAX_SEQ

    def tick(self, now_ms: int) -> tuple[int, int]:
        if now_ms > self.last_ms:
            self.last_ms, self.seq = now_ms, 0
        elif self.seq == MAX_SEQ:
            self.last_ms, self.seq = self.last_ms + 1, 0
        else:
            self.seq += 1
        return self.last_ms, self.seq


# Clock steps in nanoseconds: standing still, sub-millisecond jitter either
# way, small steps either way, and jumps of up to a day either way.
_clock_steps = st.one_of(
    st.just(0),
    st.integers(-_NS_PER_MS, _NS_PER_MS),
    st.integers(-50 * _NS_PER_MS, 50 * _NS_PER_MS),
    st.integers(-86_400_000 * _NS_PER_MS, 86_400_000 * _NS_PER_MS),
)


# --- the generator ----------------------------------------------------------


@given(
    start_ms=st.integers(946_684_800_000, 4_102_444_800_000),  # 2000 to 2100
    steps=st.lists(st.tuples(_clock_steps, st.text(max_size=80)), min_size=1, max_size=200),
)
def test_ids_strictly_increase_whatever_the_clock_does(
    start_ms: int, steps: list[tuple[int, str]]
) -> None:
    readings: list[int] = []
    now = start_ms * _NS_PER_MS
    for step, _ in steps:
        now += step
        readings.append(now)
    generator = WIDGenerator(clock=_clock_reading(readings))
    reference = _ReferenceClock()

    ids = [generator.new(name) for _, name in steps]

    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
    for wid_text, (_, name), reading in zip(ids, steps, readings, strict=True):
        assert _CANONICAL.fullmatch(wid_text)
        wid = parse_wid(wid_text)
        assert wid.origin == sanitize_node(name)
        assert (_ms_of(wid), wid.seq) == reference.tick(reading // _NS_PER_MS)


def test_id_takes_the_wall_clock_millisecond_while_the_clock_moves_forward() -> None:
    generator = WIDGenerator(clock=_clock_reading([_SOME_MS * _NS_PER_MS + 456_789]))
    assert generator.new("echo_1") == "20261124T233200123.000000Z-echo_1"


def test_id_stays_on_its_last_tick_when_the_clock_steps_backwards() -> None:
    ms = _SOME_MS
    generator = WIDGenerator(clock=_clock_reading([ms * _NS_PER_MS, (ms - 5_000) * _NS_PER_MS]))
    assert generator.new("a") == "20261124T233200123.000000Z-a"
    assert generator.new("a") == "20261124T233200123.000001Z-a"


def test_sequence_overflow_rolls_over_to_the_next_millisecond_in_order() -> None:
    ms = _SOME_MS
    readings = [ms * _NS_PER_MS] * (MAX_SEQ + 2)
    # The wall clock then catches up with the logical tick, then passes it.
    readings += [(ms + 1) * _NS_PER_MS, (ms + 2) * _NS_PER_MS]
    generator = WIDGenerator(clock=_clock_reading(readings))

    previous = generator.new("n")
    for _ in range(MAX_SEQ):
        current = generator.new("n")
        assert previous < current
        previous = current
    assert previous == "20261124T233200123.999999Z-n"

    rolled_over = generator.new("n")
    caught_up = generator.new("n")
    passed = generator.new("n")
    assert previous < rolled_over < caught_up < passed
    assert rolled_over == "20261124T233200124.000000Z-n"
    assert caught_up == "20261124T233200124.000001Z-n"
    assert passed == "20261124T233200125.000000Z-n"


def test_ids_order_across_node_names() -> None:
    generator = WIDGenerator(clock=_frozen_clock(_SOME_MS))
    ids = [generator.new(name) for name in ["zeta", "alpha", "Zz", "_", "0"]]
    assert ids == sorted(ids)


def test_a_tight_loop_of_real_ids_is_unique_and_sorted() -> None:
    ids = [new_wid("loop") for _ in range(200_000)]
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    assert ids[0] < new_wid("aaa")  # the process-wide generator keeps going up


def test_ids_from_many_threads_are_unique_and_increase_per_thread() -> None:
    generator = WIDGenerator()
    results: list[list[str]] = [[] for _ in range(4)]

    def mint(into: list[str]) -> None:
        for _ in range(20_000):
            into.append(generator.new("worker"))

    threads = [threading.Thread(target=mint, args=(ids,)) for ids in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for ids in results:
        assert ids == sorted(ids)
    assert len({wid for ids in results for wid in ids}) == 4 * 20_000


def test_new_wid_sanitizes_the_origin_and_defaults_to_wactorz() -> None:
    assert new_wid().endswith("Z-wactorz")
    assert new_wid("echo-1.local").endswith("Z-echo_1_local")
    assert new_wid("").endswith("Z-anon")


def test_a_clock_before_the_epoch_counts_on_from_the_epoch() -> None:
    generator = WIDGenerator(clock=_frozen_clock(-42))
    assert generator.new("x") == "19700101T000000000.000000Z-x"
    assert generator.new("x") == "19700101T000000000.000001Z-x"


def test_a_clock_past_year_9999_is_rejected_with_a_hint() -> None:
    generator = WIDGenerator(clock=_frozen_clock(300_000_000_000_000))
    hint = "must return nanoseconds since the epoch, like time.time_ns"
    with pytest.raises(ValueError, match=re.escape(hint)):
        generator.new("x")


# --- parsing -----------------------------------------------------------------


def test_parse_wid_reads_every_field() -> None:
    wid = parse_wid("20261124T233200123.000042Z-echo_1")
    assert wid == WID(datetime(2026, 11, 24, 23, 32, 0, 123_000, tzinfo=UTC), 42, "echo_1")
    assert wid.timestamp.tzinfo is UTC


@given(st.text(max_size=80))
def test_str_of_a_parsed_wid_gives_back_the_text(name: str) -> None:
    text = new_wid(name)
    assert str(parse_wid(text)) == text
    assert is_wid(text)


def test_the_former_name_of_origin_still_reads_it_with_a_deprecation_warning() -> None:
    wid = parse_wid("20261124T233200123.000042Z-echo_1")
    with pytest.warns(DeprecationWarning, match="WID.node is now WID.origin"):
        assert wid.node == wid.origin == "echo_1"


def test_second_precision_form_parses_as_millisecond_zero() -> None:
    wid = parse_wid("20261124T233200.000042Z-echo_1")
    assert wid.timestamp == datetime(2026, 11, 24, 23, 32, 0, tzinfo=UTC)
    assert (wid.seq, wid.origin) == (42, "echo_1")
    assert str(wid) == "20261124T233200000.000042Z-echo_1"


def test_wids_order_like_their_texts() -> None:
    generator = WIDGenerator(clock=_frozen_clock(_SOME_MS))
    texts = [generator.new(name) for name in ["b", "a", "c"]]
    assert sorted(texts) == [str(wid) for wid in sorted(map(parse_wid, texts))]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("20261124T233200123.000042-echo_1", "no 'Z-'"),
        ("20261124T233200123.000042echo_1", "no 'Z-'"),
        ("20261124T233200123.000042Z-", "origin after 'Z-' is empty"),
        ("20261124T233200123.000042Z-echo-1", "characters outside [A-Za-z0-9_]: '-'"),
        ("20261124T233200123.000042Z-échö", "characters outside [A-Za-z0-9_]: 'éö'"),
        ("20261124T233200123000042Z-echo_1", "no '.'"),
        ("20261124T233200123.42Z-echo_1", "sequence number '42' is not six digits"),
        ("20261124T233200123.0000042Z-echo_1", "is not six digits"),
        ("20261124T2332001.000042Z-echo_1", "'20261124T2332001' are not YYYYMMDDTHHMMSSmmm"),
        ("2026112T233200123.000042Z-echo_1", "are not YYYYMMDDTHHMMSSmmm"),
        ("20261124 233200123.000042Z-echo_1", "are not YYYYMMDDTHHMMSSmmm"),
        ("\uff120261124T233200123.000042Z-echo_1", "in ASCII digits"),
        ("20261324T233200123.000042Z-echo_1", "month must be in 1..12"),
        ("20260230T233200123.000042Z-echo_1", "does not exist"),
        ("20261124T253200123.000042Z-echo_1", "does not exist"),
        ("00001124T233200123.000042Z-echo_1", "does not exist"),
    ],
)
def test_malformed_text_raises_invalid_wid_saying_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(InvalidWID) as info:
        parse_wid(text)
    message = str(info.value)
    assert message.startswith(f"{text!r} is not a WID: ")
    assert reason in message
    assert "expected YYYYMMDDTHHMMSSmmm.<seq>Z-<origin>" in message
    assert not is_wid(text)


def test_invalid_wid_is_a_value_error() -> None:
    assert issubclass(InvalidWID, ValueError)


def test_is_wid_says_no_to_non_strings() -> None:
    assert not is_wid(None)
    assert not is_wid(b"20261124T233200123.000042Z-echo_1")


def test_wid_rejects_fields_that_cannot_be_spelled() -> None:
    moment = datetime(2026, 11, 24, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        WID(datetime(2026, 11, 24), 0, "a")
    with pytest.raises(ValueError, match="millisecond precision"):
        WID(moment.replace(microsecond=1), 0, "a")
    with pytest.raises(ValueError, match="range"):
        WID(moment, MAX_SEQ + 1, "a")
    with pytest.raises(ValueError, match="sanitize_node"):
        WID(moment, 0, "a-b")


def test_wid_converts_other_zones_to_utc() -> None:
    plus_two = datetime(2026, 11, 25, 1, 32, tzinfo=timezone(timedelta(hours=2)))
    wid = WID(plus_two, 0, "a")
    assert wid.timestamp.tzinfo is UTC
    assert str(wid) == "20261124T233200000.000000Z-a"


# --- node names --------------------------------------------------------------


@given(st.text())
def test_sanitize_node_gives_a_valid_node_segment(name: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_]{1,64}", sanitize_node(name))


@given(st.text())
def test_sanitize_node_is_idempotent(name: str) -> None:
    once = sanitize_node(name)
    assert sanitize_node(once) == once


@given(st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True))
def test_sanitize_node_leaves_clean_names_alone(name: str) -> None:
    assert sanitize_node(name) is name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("echo_1", "echo_1"),
        ("echo-1", "echo_1"),
        ("my agent.v2", "my_agent_v2"),
        ("Ölçer", "_l_er"),
        ("", "anon"),
        ("x" * 100, "x" * 64),
        ("-" * 100, "_" * 64),
    ],
)
def test_sanitize_node_examples(name: str, expected: str) -> None:
    assert sanitize_node(name) == expected


def test_a_system_and_the_settings_name_the_host_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from wactorz.config import Settings
    from wactorz.core.ids import default_node
    from wactorz.core.registry import ActorSystem

    monkeypatch.setattr(socket, "gethostname", lambda: "build-box-7.example.com")
    assert default_node() == ActorSystem().node == Settings().node == "build_box_7"

"""The telemetry contract: payloads round-trip, bad ones are refused by key, events become dicts."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wactorz.core.actor import ActorState
from wactorz.core.errors import SupervisorGaveUp
from wactorz.core.events import ActorEvent, EventKind
from wactorz.core.mailbox import check_message
from wactorz.core.topics import topic_matches
from wactorz.telemetry import (
    ALERTS_TOPIC,
    FAILURE_KINDS,
    FORWARDED_TOPICS,
    HEALTH_TOPIC,
    STATUS_KINDS,
    SYSTEM_ALERT_TOPIC,
    ActiveAlert,
    ActorHeartbeat,
    ActorMetrics,
    ActorStatus,
    Failure,
    MachineUsage,
    NodeHeartbeat,
    ProcessUsage,
    PublishedAlert,
    Severity,
    SystemHealth,
    alert_topic,
    heartbeat_topic,
    metrics_topic,
    node_heartbeat_topic,
    status_topic,
)

Payload = (
    ActorHeartbeat
    | ActorMetrics
    | ProcessUsage
    | MachineUsage
    | ActiveAlert
    | SystemHealth
    | NodeHeartbeat
    | PublishedAlert
    | ActorStatus
    | Failure
)

texts = st.text(max_size=20)
numbers = st.floats(allow_nan=False)
counts = st.integers(min_value=0, max_value=2**40)
maybe_texts = st.none() | texts
details = st.none() | st.dictionaries(
    texts, st.dictionaries(texts, st.none() | texts | counts | numbers, max_size=3), max_size=2
)
"""What an actor's `telemetry` hook reports: None, or a small JSON object."""

heartbeats = st.builds(
    ActorHeartbeat,
    id=texts,
    name=texts,
    node=texts,
    time=numbers,
    state=st.sampled_from(ActorState),
    incarnation=counts,
    details=details,
)
metrics = st.builds(
    ActorMetrics,
    id=texts,
    name=texts,
    node=texts,
    time=numbers,
    state=st.sampled_from(ActorState),
    queued=counts,
    capacity=counts,
    mailbox_ratio=numbers,
    processed=counts,
    rate=st.none() | numbers,
    crashes=counts,
    incarnation=counts,
    since_activity_s=numbers,
    stalled_s=numbers,
    details=details,
)
processes = st.builds(
    ProcessUsage,
    cpu_percent=numbers,
    rss_bytes=counts,
    threads=counts,
    open_fds=st.none() | counts,
)
machines = st.builds(
    MachineUsage,
    cpu_percent=numbers,
    memory_percent=numbers,
    load_average=st.none() | st.tuples(numbers, numbers, numbers),
)
active_alerts = st.builds(
    ActiveAlert, kind=texts, subject=texts, severity=st.sampled_from(Severity)
)
healths = st.builds(
    SystemHealth,
    node=texts,
    time=numbers,
    status=st.sampled_from(["ok", "info", "warning", "critical"]),
    uptime_s=st.none() | numbers,
    actors=counts,
    supervisors=counts,
    states=st.dictionaries(st.sampled_from([s.value for s in ActorState]), counts),
    crashes=counts,
    process=st.none() | processes,
    machine=st.none() | machines,
    alerts=st.lists(active_alerts, max_size=3).map(tuple),
    interval_s=numbers,
    ticks_skipped=counts,
)
node_heartbeats = st.builds(
    NodeHeartbeat,
    node=texts,
    time=numbers,
    pid=counts,
    version=texts,
    uptime_s=st.none() | numbers,
    status=texts,
    actors=counts,
)
alerts = st.builds(
    PublishedAlert,
    kind=texts,
    severity=st.sampled_from(Severity),
    subject=texts,
    name=maybe_texts,
    node=texts,
    time=numbers,
    message=texts,
    value=st.none() | numbers,
    threshold=st.none() | numbers,
    resolved=st.booleans(),
    suppressed=counts,
)
statuses = st.builds(
    ActorStatus,
    id=texts,
    name=texts,
    node=texts,
    status=st.sampled_from(sorted(STATUS_KINDS)),
    time=numbers,
    incarnation=st.none() | counts,
    reason=maybe_texts,
    error=maybe_texts,
)
failures = st.builds(
    Failure,
    kind=st.sampled_from(sorted(FAILURE_KINDS)),
    name=texts,
    id=texts,
    supervisor=maybe_texts,
    reason=maybe_texts,
    error=maybe_texts,
    incarnation=st.none() | counts,
)
STRATEGIES: dict[type[Payload], st.SearchStrategy[Any]] = {
    ActorHeartbeat: heartbeats,
    ActorMetrics: metrics,
    ProcessUsage: processes,
    MachineUsage: machines,
    ActiveAlert: active_alerts,
    SystemHealth: healths,
    NodeHeartbeat: node_heartbeats,
    PublishedAlert: alerts,
    ActorStatus: statuses,
    Failure: failures,
}
"""One strategy per payload class: each property below runs for every class."""

every_class = pytest.mark.parametrize("cls", STRATEGIES, ids=lambda cls: cls.__name__)

_fewer = settings(max_examples=min(100, settings().max_examples))
"""Ten payload classes, five properties each: a fifth of the suite's usual examples is
plenty for plain data; ``HYPOTHESIS_PROFILE=dev`` lowers it further."""


def through_json(message: dict[str, Any]) -> Any:
    return json.loads(json.dumps(message))


# ---- round trips -----------------------------------------------------------------------------


@every_class
@_fewer
@given(data=st.data())
def test_every_payload_reads_back_as_itself(cls: type[Payload], data: st.DataObject) -> None:
    payload: Payload = data.draw(STRATEGIES[cls])
    assert cls.from_message(payload.to_message()) == payload


@every_class
@_fewer
@given(data=st.data())
def test_every_payload_survives_json_on_the_wire(cls: type[Payload], data: st.DataObject) -> None:
    payload: Payload = data.draw(STRATEGIES[cls])
    message = payload.to_message()
    check_message(message)  # what the local pub/sub accepts
    received = through_json(message)
    assert received == message
    assert cls.from_message(received) == payload


@every_class
@_fewer
@given(data=st.data())
def test_a_message_has_the_fields_as_keys_in_field_order(
    cls: type[Payload], data: st.DataObject
) -> None:
    payload: Payload = data.draw(STRATEGIES[cls])
    expected = [field.name for field in attrs.fields(cls)]
    if getattr(payload, "details", True) is None:
        expected.remove("details")  # an optional key, left out while there is none
    assert list(payload.to_message()) == expected


OPTIONAL_KEYS = {"details"}
"""Keys added to a payload after it was first published: absent while None, read as None."""


PUBLISHED_KEYS: dict[type, str] = {
    ActorHeartbeat: "id name node time state incarnation details",
    ActorMetrics: "id name node time state queued capacity mailbox_ratio processed rate crashes "
    "incarnation since_activity_s stalled_s details",
    SystemHealth: "node time status uptime_s actors supervisors states crashes process machine "
    "alerts interval_s ticks_skipped",
    ProcessUsage: "cpu_percent rss_bytes threads open_fds",
    MachineUsage: "cpu_percent memory_percent load_average",
    ActiveAlert: "kind subject severity",
    NodeHeartbeat: "node time pid version uptime_s status actors",
    PublishedAlert: "kind severity subject name node time message value threshold resolved "
    "suppressed",
    ActorStatus: "id name node status time incarnation reason error",
    Failure: "kind name id supervisor reason error incarnation",
}
"""The keys of each payload, in order, as published before the contract had classes; plus
the optional ``details`` (`OPTIONAL_KEYS`) of the actor payloads, added at the end."""


@pytest.mark.parametrize("cls", PUBLISHED_KEYS)
def test_the_fields_are_the_published_keys_in_order(cls: type) -> None:
    assert [field.name for field in attrs.fields(cls)] == PUBLISHED_KEYS[cls].split()


def test_a_reader_ignores_keys_it_does_not_know() -> None:
    """A consumer must still read what a newer node publishes."""
    heartbeat = ActorHeartbeat("a-1", "a", "n", 1.0, ActorState.RUNNING, 0)
    newer = {**heartbeat.to_message(), "colour": "blue"}
    assert ActorHeartbeat.from_message(newer) == heartbeat


def test_details_are_optional_absent_while_none_and_read_back_as_published() -> None:
    bare = ActorHeartbeat("a-1", "a", "n", 1.0, ActorState.RUNNING, 0)
    assert "details" not in bare.to_message()
    assert ActorHeartbeat.from_message(bare.to_message()).details is None
    reported = {"llm": {"model": "claude-x", "turns": 3, "cost_usd": 0.25}}
    message = attrs.evolve(bare, details=reported).to_message()
    assert message["details"] == reported
    assert ActorHeartbeat.from_message(through_json(message)).details == reported
    with pytest.raises(ValueError, match="details: 'x' is not an object"):
        ActorMetrics.from_message(
            {
                **message,
                **dict.fromkeys(PUBLISHED_KEYS[ActorMetrics].split(), 0),
                "state": "running",
            }
            | {"id": "a", "name": "a", "node": "n", "details": "x"}
        )


def test_numbers_read_back_as_floats_and_enums_as_enums() -> None:
    message = NodeHeartbeat("n", 1.0, 42, "0.1.0", 12.0, "ok", 3).to_message()
    node = NodeHeartbeat.from_message({**message, "time": 1795565370, "uptime_s": 5})
    assert type(node.time) is float and type(node.uptime_s) is float
    heartbeat = ActorHeartbeat("a-1", "a", "n", 1.0, ActorState.STOPPING, 0).to_message()
    assert heartbeat["state"] == "stopping" and type(heartbeat["state"]) is str
    assert ActorHeartbeat.from_message(heartbeat).state is ActorState.STOPPING
    alert = ActiveAlert("cpu", "n", Severity.WARNING).to_message()
    assert ActiveAlert.from_message(alert).severity is Severity.WARNING


# ---- malformed payloads ----------------------------------------------------------------------


@every_class
@_fewer
@given(data=st.data())
def test_a_missing_key_is_refused_by_name(cls: type[Payload], data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[cls]).to_message()
    key = data.draw(st.sampled_from(sorted(message.keys() - OPTIONAL_KEYS)))
    del message[key]
    with pytest.raises(ValueError, match=rf"{key} is missing"):
        cls.from_message(message)


WRONG_FOR_EVERY_FIELD = {"unexpected": True}
"""Not a string, number, boolean, list, known enum value or payload object."""


@every_class
@_fewer
@given(data=st.data())
def test_a_key_of_the_wrong_type_is_refused_by_name(
    cls: type[Payload], data: st.DataObject
) -> None:
    message = data.draw(STRATEGIES[cls]).to_message()
    key = data.draw(st.sampled_from(sorted(message.keys() - OPTIONAL_KEYS)))
    message[key] = WRONG_FOR_EVERY_FIELD
    with pytest.raises(ValueError, match=rf"not a valid {cls.__name__} message: {key}"):
        cls.from_message(message)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"queued": "3"}, "queued: '3' is not an integer"),
        ({"queued": 3.0}, "queued: 3.0 is not an integer"),
        ({"queued": True}, "queued: True is not an integer"),
        ({"rate": "1.5"}, "rate: '1.5' is not a number"),
        ({"mailbox_ratio": False}, "mailbox_ratio: False is not a number"),
        ({"name": 7}, "name: 7 is not a string"),
        ({"state": "asleep"}, "state: 'asleep' is not one of created, starting, running"),
        ({"state": 1}, "state: 1 is not one of"),
    ],
)
def test_values_are_taken_only_as_the_json_type_they_are_published_as(
    change: dict[str, Any], problem: str
) -> None:
    metrics = ActorMetrics(
        "a-1", "a", "n", 1.0, ActorState.RUNNING, 0, 8, 0.0, 1, None, 0, 0, 0.5, 0.0
    )
    with pytest.raises(ValueError, match="not a valid ActorMetrics message") as refused:
        ActorMetrics.from_message({**metrics.to_message(), **change})
    assert problem in str(refused.value)
    assert "wactorz.telemetry.ActorMetrics" in str(refused.value)  # where the keys are


def healthy() -> dict[str, Any]:
    return SystemHealth(
        node="n",
        time=1.0,
        status="ok",
        uptime_s=2.0,
        actors=1,
        supervisors=0,
        states={"running": 1},
        crashes=0,
        process=ProcessUsage(1.0, 100, 2, 8),
        machine=MachineUsage(5.0, 40.0, (0.1, 0.2, 0.3)),
        alerts=(ActiveAlert("cpu", "n", Severity.WARNING),),
        interval_s=5.0,
        ticks_skipped=0,
    ).to_message()


PROCESS = {"cpu_percent": 1.0, "threads": 2, "open_fds": None}
MACHINE = {"cpu_percent": 1.0, "memory_percent": 2.0}


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("process", {**PROCESS, "rss_bytes": "big"}, "process.rss_bytes: 'big' is not an integer"),
        ("process", "fine", "process: 'fine' is not an object"),
        (
            "machine",
            {**MACHINE, "load_average": [1.0, 2.0]},
            "machine.load_average: [1.0, 2.0] is not a list of 3 items",
        ),
        (
            "machine",
            {**MACHINE, "load_average": "1 2 3"},
            "machine.load_average: '1 2 3' is not a list",
        ),
        ("alerts", [{"kind": "cpu", "subject": "n"}], "alerts[0].severity is missing"),
        (
            "alerts",
            [{"kind": "cpu", "subject": "n", "severity": "dire"}],
            "alerts[0].severity: 'dire' is not one of info, warning, critical",
        ),
        ("alerts", "cpu", "alerts: 'cpu' is not a list"),
        ("states", {"running": "1"}, "states['running']: '1' is not an integer"),
        ("states", [["running", 1]], "states: [['running', 1]] is not an object"),
    ],
)
def test_a_bad_nested_value_is_named_by_its_path(key: str, value: object, problem: str) -> None:
    with pytest.raises(ValueError, match="not a valid SystemHealth message") as refused:
        SystemHealth.from_message({**healthy(), key: value})
    assert problem in str(refused.value)


def test_every_problem_is_listed_at_once() -> None:
    message = {**healthy(), "actors": None, "crashes": "none"}
    del message["node"]
    with pytest.raises(ValueError) as refused:
        SystemHealth.from_message(message)
    text = str(refused.value)
    assert "node is missing" in text
    assert "actors: None is not an integer" in text
    assert "crashes: 'none' is not an integer" in text


@pytest.mark.parametrize("message", [None, [], "{}", 42, [("id", "x")]])
def test_something_other_than_a_dict_is_refused(message: Any) -> None:
    with pytest.raises(ValueError, match=r"ActorHeartbeat message: it is .*, not a dict"):
        ActorHeartbeat.from_message(message)


def test_a_long_bad_value_is_shortened_in_the_error() -> None:
    message = {**healthy(), "status": ["x" * 10_000]}
    with pytest.raises(ValueError) as refused:
        SystemHealth.from_message(message)
    assert len(str(refused.value)) < 300


# ---- lifecycle events as dicts ---------------------------------------------------------------


def crash(**changes: Any) -> ActorEvent:
    event = ActorEvent(
        EventKind.CRASHED,
        "echo",
        "20261125T000930631.000000Z-echo",
        time=1795565371.2,
        exception=RuntimeError("asked to crash"),
        incarnation=0,
        supervisor="20261125T000930000.000000Z-sup",
    )
    return attrs.evolve(event, **changes)


def test_a_crash_becomes_the_status_the_bridge_publishes() -> None:
    status = ActorStatus.from_event(crash(), "kitchen")
    assert status.to_message() == {
        "id": "20261125T000930631.000000Z-echo",
        "name": "echo",
        "node": "kitchen",
        "status": "crashed",
        "time": 1795565371.2,
        "incarnation": 0,
        "reason": None,
        "error": "RuntimeError: asked to crash",
    }
    assert ActorStatus.from_message(through_json(status.to_message())) == status


@pytest.mark.parametrize("kind", sorted(STATUS_KINDS))
def test_each_status_kind_reads_back_as_its_event_kind(kind: EventKind) -> None:
    event = crash(kind=kind, exception=None, reason="stopped", incarnation=2)
    status = ActorStatus.from_message(ActorStatus.from_event(event, "kitchen").to_message())
    assert status.status is kind
    assert (status.id, status.name, status.time) == (event.actor_id, event.actor_name, event.time)
    assert (status.incarnation, status.reason, status.error) == (2, "stopped", None)


def test_the_error_text_is_the_root_cause_of_a_group() -> None:
    group = ExceptionGroup("nursery", [ValueError("bad input"), KeyError("k")])
    status = ActorStatus.from_event(crash(exception=group), "kitchen")
    assert status.error == "ValueError: bad input (and 1 more)"


@pytest.mark.parametrize("kind", [EventKind.GAVE_UP, EventKind.DEAD_LETTER])
def test_an_event_without_a_status_is_refused_with_what_to_check(kind: EventKind) -> None:
    with pytest.raises(ValueError, match="STATUS_KINDS"):
        ActorStatus.from_event(crash(kind=kind), "kitchen")


def test_a_status_of_another_kind_is_refused_when_read() -> None:
    message = {**ActorStatus.from_event(crash(), "kitchen").to_message(), "status": "gave_up"}
    with pytest.raises(ValueError, match="status: 'gave_up' is not one of crashed, restarted"):
        ActorStatus.from_message(message)


def test_a_crash_becomes_the_failure_the_monitor_hears_of() -> None:
    failure = Failure.from_event(crash(reason="failed in on_start"))
    assert failure.to_message() == {
        "kind": "crashed",
        "name": "echo",
        "id": "20261125T000930631.000000Z-echo",
        "supervisor": "20261125T000930000.000000Z-sup",
        "reason": "failed in on_start",
        "error": "RuntimeError: asked to crash",
        "incarnation": 0,
    }
    assert Failure.from_message(through_json(failure.to_message())) == failure


def test_a_give_up_becomes_a_failure_too() -> None:
    event = ActorEvent(
        EventKind.GAVE_UP,
        "fragile",
        "20261125T000930000.000000Z-fragile",
        exception=SupervisorGaveUp("fragile", "more than 0 restarts in 10 s"),
        reason="more than 0 restarts in 10 s",
    )
    failure = Failure.from_message(Failure.from_event(event).to_message())
    assert failure.kind is EventKind.GAVE_UP
    assert failure.error is not None and failure.error.startswith("SupervisorGaveUp")
    assert failure.supervisor is None and failure.incarnation is None


def test_an_event_that_is_no_failure_is_refused() -> None:
    with pytest.raises(ValueError, match="FAILURE_KINDS"):
        Failure.from_event(crash(kind=EventKind.RESTARTED))
    message = {**Failure.from_event(crash()).to_message(), "kind": "started"}
    with pytest.raises(ValueError, match="kind: 'started' is not one of crashed, gave_up"):
        Failure.from_message(message)


# ---- topics ----------------------------------------------------------------------------------


def test_the_topics_of_one_actor_and_one_node() -> None:
    assert heartbeat_topic("a-1") == "agents/a-1/heartbeat"
    assert metrics_topic("a-1") == "agents/a-1/metrics"
    assert alert_topic("a-1") == "agents/a-1/alert"
    assert status_topic("a-1") == "agents/a-1/status"
    assert node_heartbeat_topic("kitchen") == "nodes/kitchen/heartbeat"


def test_the_forwarded_filters_cover_every_published_topic_but_the_local_feed() -> None:
    published = [
        heartbeat_topic("a-1"),
        metrics_topic("a-1"),
        alert_topic("a-1"),
        HEALTH_TOPIC,
        SYSTEM_ALERT_TOPIC,
        node_heartbeat_topic("kitchen"),
    ]
    for topic in published:
        assert any(topic_matches(f, topic) for f in FORWARDED_TOPICS), topic
    assert not any(topic_matches(f, ALERTS_TOPIC) for f in FORWARDED_TOPICS)


def test_severities_rank_from_info_to_critical() -> None:
    assert [s.rank for s in Severity] == [0, 1, 2]
    assert str(Severity.WARNING) == "warning"

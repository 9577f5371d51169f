"""Mailboxes, envelopes and the ask reply slot."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from wactorz.core.actor import Actor
from wactorz.core.errors import InvalidMessage
from wactorz.core.ids import parse_wid
from wactorz.core.mailbox import Envelope, Mail, Mailbox, Reply, check_message, check_reply


async def test_reply_resolved_before_wait_returns_at_once() -> None:
    reply = Reply()
    assert reply.resolve(42)
    assert not reply.pending
    assert await reply.wait() == 42
    assert not reply.resolve(43)  # exactly once


async def test_reply_fail_raises_in_the_waiter() -> None:
    reply = Reply()
    async with trio.open_nursery() as nursery:
        got: list[BaseException] = []

        async def waiter() -> None:
            try:
                await reply.wait()
            except KeyError as exc:
                got.append(exc)

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert reply.fail(KeyError("k"))
    assert isinstance(got[0], KeyError)


async def test_cancelled_wait_abandons_the_slot() -> None:
    reply = Reply()
    with trio.move_on_after(0.01):
        await reply.wait()
    assert not reply.pending
    assert not reply.resolve("too late")


def test_envelope_id_is_a_wid_stamped_once() -> None:
    envelope = Envelope({"a": 1}, sender="s")
    first = envelope.id
    assert envelope.id == first
    assert parse_wid(first).origin == "msg"
    assert envelope.correlation_id is None
    assert Envelope({}, reply=Reply()).correlation_id is not None


async def test_close_returns_queued_messages_and_refuses_later_ones() -> None:
    mailbox = Mailbox(2)
    first: Mail = ({"n": 1}, None, None, None)
    second: Mail = ({"n": 2}, "sender", None, "a/topic")
    mailbox.send_channel.send_nowait(first)
    mailbox.send_channel.send_nowait(second)
    assert mailbox.statistics().queued == 2
    left = mailbox.close()
    assert left == [first, second]
    assert left[0] is first and left[1] is second
    with pytest.raises(trio.BrokenResourceError):
        mailbox.send_channel.send_nowait(({"n": 3}, None, None, None))


async def test_close_also_takes_messages_of_blocked_senders() -> None:
    mailbox = Mailbox(1)
    mailbox.send_channel.send_nowait(({"n": 1}, None, None, None))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.send_channel.send, ({"n": 2}, None, None, None))
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.statistics().senders_waiting == 1
        left = mailbox.close()
    assert [message for message, _, _, _ in left] == [{"n": 1}, {"n": 2}]


def test_mailbox_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Mailbox(0)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({1: "x"}, "key 1 is an int, not a str"),
        ({(1,): "x"}, r"key \(1,\) is a tuple, not a str"),
        ({"a": object()}, "a is an object"),
        ({"a": [1, {"b": {1, 2}}]}, r"a\[1\]\.b is a set"),
        ({"a": Ellipsis}, "a is an ellipsis"),
    ],
)
def test_invalid_messages_name_the_type_with_the_right_article(
    message: dict[Any, Any], problem: str
) -> None:
    with pytest.raises(InvalidMessage, match=f": {problem};"):
        check_message(message)


def test_invalid_replies_name_the_type_with_the_right_article() -> None:
    with pytest.raises(InvalidMessage, match="reply is an object"):
        check_reply(object())
    with pytest.raises(InvalidMessage, match=r"reply\.a is a frozenset"):
        check_reply({"a": frozenset()})


def test_this_trio_keeps_channel_state_where_mailboxes_read_it() -> None:
    # The fast path is the one in use: if a Trio upgrade moved the internals, this says so
    # (and mailboxes fall back to the channel's public receive, tested below).
    from wactorz.core import mailbox

    assert mailbox._channels_keep_their_state_inside()
    assert mailbox._INSIDE


@pytest.mark.parametrize("inside", [True, False])
async def test_a_mailbox_waits_delivers_and_closes_the_same_either_way(
    inside: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wactorz.core import mailbox as module

    monkeypatch.setattr(module, "_INSIDE", inside)
    box = Mailbox(2)
    assert not box.queue
    assert bool(box.waiting_receivers) is bool(box.waiting_senders) is not inside
    got: list[Mail] = []

    async def receive_one() -> None:
        got.append(await box.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_one)
        await trio.testing.wait_all_tasks_blocked()
        assert box.receive_channel.statistics().tasks_waiting_receive == 1
        box.send_channel.send_nowait(({"n": 1}, None, None, None))
    assert got == [({"n": 1}, None, None, None)]
    # Cancelled while waiting: nothing is left registered, and the next mail is kept.
    with trio.move_on_after(0.01):
        await box.wait()
    assert box.receive_channel.statistics().tasks_waiting_receive == 0
    box.send_channel.send_nowait(({"n": 2}, None, None, None))
    assert box.statistics().queued == 1
    assert bool(box.queue) is inside  # the fallback never looks inside the channel
    assert await box.wait() == ({"n": 2}, None, None, None)

    # Closed while waiting: the waiter hears so, as a channel's receiver does.
    async def wait_closed() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await box.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_closed)
        await trio.testing.wait_all_tasks_blocked()
        assert box.close() == []
    with pytest.raises(trio.ClosedResourceError):
        await box.wait()
    # Closed with mail queued and a sender waiting for room: all of it comes back, in order.
    full = Mailbox(1)
    full.send_channel.send_nowait(({"n": 4}, None, None, None))
    async with trio.open_nursery() as nursery:

        async def send_late() -> None:
            await full.send_channel.send(({"n": 5}, None, None, None))

        nursery.start_soon(send_late)
        await trio.testing.wait_all_tasks_blocked()
        assert [mail[0] for mail in full.close()] == [{"n": 4}, {"n": 5}]


@pytest.mark.parametrize("inside", [True, False])
async def test_an_actor_system_works_the_same_without_the_channels_internals(
    inside: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where a Trio version keeps its channel state elsewhere, every send and receive goes
    # through the channel's methods: same order, same backpressure, same stop.
    from wactorz.core import actor as actor_module
    from wactorz.core import mailbox as module
    from wactorz.core.registry import ActorSystem

    monkeypatch.setattr(module, "_INSIDE", inside)
    monkeypatch.setattr(actor_module, "_INSIDE", inside)  # read as classes are defined

    class Tally(Actor):
        mailbox_size = 4
        seen: list[int] = []

        async def _process(self, message: dict[str, Any]) -> object:
            Tally.seen.append(message["n"])
            return len(Tally.seen)

    Tally.seen = []
    async with ActorSystem() as system:
        await system.spawn(Tally, name="tally")
        for n in range(200):  # far past the mailbox: senders wait for room
            await system.send("tally", {"n": n})
        assert await system.ask("tally", {"n": 200}) == 201
        system.send_nowait("tally", {"n": 201})
    assert Tally.seen == list(range(202))

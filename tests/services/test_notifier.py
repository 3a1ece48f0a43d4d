"""``Waiter`` and ``Notifier``: long-poll wake-ups, the per-user cap, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from pollchat.domain.errors import TooManyRequests
from pollchat.services.notifier import Notifier, Waiter
from tests.conftest import FakeClock


def make_notifier(cap: int = 3, clock: FakeClock | None = None) -> Notifier:
    return Notifier(max_parked_per_user=cap, monotonic=(clock or FakeClock()).monotonic)


async def parked(waiter: Waiter, timeout: float = 5) -> asyncio.Task[bool]:
    """A task parked on ``waiter``, given the chance to start waiting."""
    task = asyncio.create_task(waiter.wait(timeout))
    await asyncio.sleep(0)
    assert not task.done()
    return task


# Waiter


async def test_waiter_times_out_with_false() -> None:
    waiter = Waiter("s1", "u1", FakeClock().monotonic)
    assert await waiter.wait(0.01) is False
    assert waiter.woken_at is None


async def test_waiter_woken_while_parked_returns_true() -> None:
    clock = FakeClock()
    waiter = Waiter("s1", "u1", clock.monotonic)
    task = await parked(waiter)
    clock.advance(2)
    waiter.wake()
    assert await asyncio.wait_for(task, 1) is True
    assert waiter.woken_at == clock.monotonic()


async def test_wake_before_wait_is_kept_and_first_wake_time_wins() -> None:
    clock = FakeClock()
    waiter = Waiter("s1", "u1", clock.monotonic)
    waiter.wake()
    first = waiter.woken_at
    clock.advance(5)
    waiter.wake()
    assert waiter.woken_at == first
    assert await waiter.wait(0) is True


async def test_clear_forgets_earlier_wakes() -> None:
    waiter = Waiter("s1", "u1", FakeClock().monotonic)
    waiter.wake()
    waiter.clear()
    assert waiter.woken_at is None
    assert await waiter.wait(0.01) is False


# Notifier


async def test_notify_wakes_the_waiters_of_that_session_only() -> None:
    notifier = make_notifier()
    with (
        notifier.listen("s1", "alice") as a1,
        notifier.listen("s1", "bob") as b1,
        notifier.listen("s2", "alice") as a2,
    ):
        tasks = [await parked(w) for w in (a1, b1)]
        other = await parked(a2, timeout=0.05)
        assert notifier.notify("s1") == 2
        assert await asyncio.wait_for(asyncio.gather(*tasks), 1) == [True, True]
        assert await other is False
        assert notifier.notify("nobody-listens") == 0


async def test_wake_before_park_is_not_lost() -> None:
    """listen → (a commit lands and notifies) → wait: the wait returns True at once."""
    notifier = make_notifier()
    with notifier.listen("s1", "alice") as waiter:
        assert notifier.notify("s1") == 1
        assert await asyncio.wait_for(waiter.wait(30), 0.5) is True


async def test_wake_routes_one_session_or_everyone() -> None:
    notifier = make_notifier()
    with notifier.listen("s1", "alice") as a, notifier.listen("s2", "bob") as b:
        notifier.wake("s1")
        assert (await a.wait(0), await b.wait(0)) == (True, False)
        a.clear()
        notifier.wake("*")
        assert (await a.wait(0), await b.wait(0)) == (True, True)


async def test_timeout_without_notify_returns_false() -> None:
    notifier = make_notifier()
    with notifier.listen("s1", "alice") as waiter:
        assert await waiter.wait(0.02) is False


async def test_per_user_cap_raises_and_frees_on_exit() -> None:
    notifier = make_notifier(cap=2)
    with notifier.listen("s1", "alice"), notifier.listen("s2", "alice"):
        assert notifier.parked == 2
        with pytest.raises(TooManyRequests) as info:
            with notifier.listen("s3", "alice"):
                pass  # pragma: no cover
        assert info.value.status_code == 429
        assert info.value.code == "too_many_long_polls"
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert notifier.parked == 2
        # Another user has a cap of its own.
        with notifier.listen("s1", "bob"):
            assert notifier.parked == 3
    assert notifier.parked == 0
    with notifier.listen("s1", "alice"), notifier.listen("s1", "alice"):
        assert notifier.parked == 2


async def test_slot_is_freed_when_the_poll_fails() -> None:
    notifier = make_notifier(cap=1)
    with pytest.raises(RuntimeError):
        with notifier.listen("s1", "alice"):
            raise RuntimeError("the read failed")
    assert notifier.parked == 0
    with notifier.listen("s1", "alice") as waiter:
        assert notifier.notify("s1") == 1
        assert await waiter.wait(0) is True


async def test_close_wakes_everyone_and_later_listens_are_pre_woken() -> None:
    notifier = make_notifier()
    with notifier.listen("s1", "alice") as a, notifier.listen("s2", "bob") as b:
        tasks = [await parked(a), await parked(b)]
        assert not notifier.closed
        notifier.close()
        assert notifier.closed
        assert await asyncio.wait_for(asyncio.gather(*tasks), 1) == [True, True]
    with notifier.listen("s3", "carol") as late:
        assert late.woken_at is not None
        assert await asyncio.wait_for(late.wait(30), 0.5) is True

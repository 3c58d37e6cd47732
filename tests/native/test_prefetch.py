"""Delivery and PrefetchBuffer through the real extension."""

from __future__ import annotations

import threading
import time

from rqueue._rqueue import Delivery, PrefetchBuffer


def make(tag: int) -> Delivery:
    return Delivery(str(tag), "q", b"payload-%d" % tag, 1)


def test_delivery_fields() -> None:
    d = Delivery("7", "q", b"\x00\x01", 3)
    assert (d.tag, d.queue, d.payload, d.deliveries) == ("7", "q", b"\x00\x01", 3)
    assert 'tag="7"' in repr(d)


def test_prefetch_credits_and_len() -> None:
    buf = PrefetchBuffer(3)
    assert buf.capacity == 3
    assert buf.credits() == 3
    assert buf.put(make(1))
    assert buf.put(make(2))
    assert len(buf) == 2
    assert buf.credits() == 1
    got = buf.get(0)
    assert got is not None and got.tag == "1"
    assert buf.credits() == 1  # taken but not done
    buf.done()
    assert buf.credits() == 2


def test_prefetch_put_refused_when_full() -> None:
    buf = PrefetchBuffer(1)
    assert buf.put(make(1))
    assert not buf.put(make(2))


def test_prefetch_get_returns_none_after_timeout() -> None:
    buf = PrefetchBuffer(1)
    start = time.monotonic()
    assert buf.get(0.1) is None
    assert time.monotonic() - start >= 0.09


def test_prefetch_get_releases_gil() -> None:
    buf = PrefetchBuffer(1)
    counter = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.02)
        before = counter
        assert buf.get(0.3) is None
        assert counter - before > 1000, "another Python thread ran while get() waited"
    finally:
        stop.set()
        t.join()


def test_prefetch_get_wakes_when_put_from_another_thread() -> None:
    buf = PrefetchBuffer(2)
    timer = threading.Timer(0.05, lambda: buf.put(make(9)))
    timer.start()
    got = buf.get(5)
    timer.join()
    assert got is not None and got.tag == "9"


def test_prefetch_close_wakes_waiters_and_returns_untaken() -> None:
    buf = PrefetchBuffer(4)
    for i in range(3):
        buf.put(make(i))
    assert buf.get() is not None
    result: list[object] = []
    empty = PrefetchBuffer(1)
    waiter = threading.Thread(target=lambda: result.append(empty.get()))
    waiter.start()
    time.sleep(0.05)
    assert empty.close() == []
    waiter.join(2)
    assert not waiter.is_alive()
    assert result == [None]
    left = buf.close()
    assert [d.tag for d in left] == ["1", "2"]
    assert not buf.put(make(5))
    assert buf.credits() == 0

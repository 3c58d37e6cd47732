"""parse_rate and TokenBucket through the real extension."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rqueue._rqueue import RateLimitTable, TokenBucket, parse_rate
from rqueue.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10/s", 10.0), ("120/m", 2.0), ("3600/h", 1.0), ("5", 5.0), (" 2 / s ", 2.0), (2.5, 2.5), (3, 3.0)],
)
def test_parse_rate_accepted_forms(text: str | float, expected: float) -> None:
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "10/d", "10/", "/s", "", "10/sec", 0, -2.0, float("nan")])
def test_parse_rate_bad_input_raises_configuration_error(bad: str | float) -> None:
    with pytest.raises(ConfigurationError):
        parse_rate(bad)


def test_parse_rate_error_names_value_and_forms() -> None:
    with pytest.raises(ConfigurationError, match=r"'?\"?10/x\"?'?.*10/s"):
        parse_rate("10/x")


@given(st.floats(min_value=0.001, max_value=1e6), st.sampled_from([("s", 1), ("m", 60), ("h", 3600)]))
def test_parse_rate_roundtrip(value: float, unit: tuple[str, int]) -> None:
    assert parse_rate(f"{value!r}/{unit[0]}") == pytest.approx(value / unit[1])


def test_token_bucket_burst_defaults() -> None:
    assert TokenBucket("100/s").burst == 100
    assert TokenBucket("10/m").burst == 1
    assert TokenBucket(2.5, burst=7).burst == 7
    assert TokenBucket("10/m").rate_per_s == pytest.approx(1 / 6)


def test_token_bucket_try_acquire_returns_wait() -> None:
    bucket = TokenBucket("10/m")
    assert bucket.try_acquire() == 0.0
    wait = bucket.try_acquire()
    assert 5.9 < wait <= 6.0


def test_token_bucket_set_rate() -> None:
    bucket = TokenBucket("1/h")
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() > 3000
    bucket.set_rate("1000/s")
    assert bucket.burst == 1000
    with pytest.raises(ConfigurationError):
        bucket.set_rate("nope")


def test_token_bucket_bad_arguments() -> None:
    with pytest.raises(ConfigurationError):
        TokenBucket("fast")
    with pytest.raises(ConfigurationError):
        TokenBucket("1/s", burst=0)
    with pytest.raises(ConfigurationError):
        TokenBucket("1/s", burst=2).try_acquire(3)


# -- RateLimitTable: the node-wide table shared over fork ---------------------------------------------


def test_rate_limit_table_limits_only_named_tasks() -> None:
    table = RateLimitTable()
    table.set("tasks.add", "2/s")
    assert table.rate("tasks.add") == pytest.approx(2.0)
    assert table.rate("tasks.other") is None
    assert [table.try_acquire("tasks.add") for _ in range(2)] == [0.0, 0.0]
    assert 0.0 < table.try_acquire("tasks.add") <= 0.5
    assert table.try_acquire("tasks.other") == 0.0
    assert table.limits() == [("tasks.add", pytest.approx(2.0))]


@pytest.mark.parametrize("off", [None, "0", " 0/m ", 0, 0.0])
def test_rate_limit_table_zero_or_none_removes_limit(off: str | float | None) -> None:
    table = RateLimitTable()
    table.set("tasks.add", "1/h")
    assert table.try_acquire("tasks.add") == 0.0
    assert table.try_acquire("tasks.add") > 3000
    table.set("tasks.add", off)
    assert table.rate("tasks.add") is None
    assert all(table.try_acquire("tasks.add") == 0.0 for _ in range(100))
    assert RateLimitTable.check(off) is None


@pytest.mark.parametrize("bad", ["abc", "10/d", "-1", "0/d", "", float("nan"), -3])
def test_rate_limit_table_bad_rate_raises(bad: str | float) -> None:
    table = RateLimitTable()
    with pytest.raises(ConfigurationError, match="invalid rate limit"):
        table.set("tasks.add", bad)
    with pytest.raises(ConfigurationError, match="invalid rate limit"):
        RateLimitTable.check(bad)
    assert table.rate("tasks.add") is None


def test_rate_limit_table_bad_names_and_full_table() -> None:
    table = RateLimitTable(slots=1)
    with pytest.raises(ConfigurationError, match="empty"):
        table.set("", "1/s")
    with pytest.raises(ConfigurationError, match="at most 192 bytes"):
        table.set("x" * 193, "1/s")
    table.set("a", "1/s")
    with pytest.raises(ConfigurationError, match="full"):
        table.set("b", "1/s")


def _in_children(n: int, body: Callable[[], str], then: Callable[[], None] | None = None) -> list[str]:
    """Run ``body`` in ``n`` forked children (and ``then`` in this process meanwhile); their results."""
    readers = []
    for _ in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                os.write(w, body().encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        readers.append((pid, r))
    if then is not None:
        then()
    out = []
    for pid, r in readers:
        with os.fdopen(r) as fh:
            out.append(fh.read())
        os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_rate_limit_table_bound_holds_across_forked_processes() -> None:
    """Four processes taking tokens from one bucket get, together, no more than the rate allows."""
    table = RateLimitTable()
    table.set("tasks.limited", "20/s")
    start = time.monotonic()

    def take() -> str:
        grants = 0
        while time.monotonic() - start < 1.0:
            if table.try_acquire("tasks.limited") == 0.0:
                grants += 1
            time.sleep(0.0005)
        return str(grants)

    counts = [int(c) for c in _in_children(4, take)]
    elapsed = time.monotonic() - start
    assert sum(counts) <= 20 * elapsed + 20 + 1, counts  # the rate over the window plus one burst
    assert sum(counts) >= 20, counts  # the burst at least was granted


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_rate_limit_table_change_after_fork_reaches_children() -> None:
    table = RateLimitTable()
    table.set("tasks.add", "1/h")

    def watch() -> str:
        deadline = time.monotonic() + 10
        while table.rate("tasks.add") != 50.0 and time.monotonic() < deadline:
            time.sleep(0.001)
        return str(table.rate("tasks.add"))

    def change() -> None:
        time.sleep(0.2)
        table.set("tasks.add", "50/s")

    assert _in_children(3, watch, change) == ["50.0"] * 3

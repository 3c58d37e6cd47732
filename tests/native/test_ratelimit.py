"""parse_rate and TokenBucket through the real extension."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rqueue._rqueue import TokenBucket, parse_rate
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

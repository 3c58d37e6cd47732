"""Rate limit values (``"10/s"``, ``"100/m"``, a number per second): checked where a task is defined
and where a worker applies them."""

from __future__ import annotations

from rqueue import _rqueue
from rqueue.exceptions import ConfigurationError, RateLimitError


def check_rate(rate: str | float | None, what: str) -> float | None:
    """Tasks per second of a rate limit (None: no limit); ``RateLimitError`` naming ``what`` otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (str, int, float, type(None))):
        raise RateLimitError(
            f"{what}: invalid rate limit {rate!r}; use a string like '10/s', '100/m', '1000/h' or a number per second"
        )
    try:
        return _rqueue.RateLimitTable.check(rate)
    except ConfigurationError as exc:
        raise RateLimitError(f"{what}: {exc}") from None

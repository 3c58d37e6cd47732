"""rqueue: a Celery-compatible distributed task queue with a Rust hot path."""

from rqueue._rqueue import __version__

__all__ = ["__version__"]

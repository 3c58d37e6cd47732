"""``rqueue bench``: measure a deployment's own throughput and latency, through the real CLI worker.

Scenarios: ``enqueue`` (``delay()`` one by one, and batch publishes), ``drain`` (a filled queue
emptied by freshly started workers) and ``roundtrip`` (sequential ``delay().get()``). The peer
comparison in ``benches/peers`` uses the same pieces (``procstat``, ``processes``, ``stats``).
"""

from __future__ import annotations

from rqueue.bench.runner import SCENARIOS, Bench, BenchError, BenchOptions

__all__ = ["SCENARIOS", "Bench", "BenchError", "BenchOptions"]

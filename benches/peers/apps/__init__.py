"""One module per task queue library: the same no-op task, its producer calls and its worker commands.

Every module reads its settings from the environment the harness sets (``BENCH_REDIS_URL``,
``BENCH_RESULTS`` = ``1``/``0``, ``BENCH_CONFIG`` = a key of its ``CONFIGS``, ``BENCH_PAYLOAD_BYTES``
for the payload drains, which send ``common.ARGS``), runs in its library's interpreter (the harness
asks it for its version and commands through ``peers.client LIBRARY describe``), counts each task it runs
with ``rqueue.bench.counter.count()`` (the harness reads the counts to time drains the same way for
every library), and defines:

- ``LIBRARY``, the distribution name; ``CONFIGS``: ``{config: (worker argv, what it means)}``;
  ``worker_argv(config)`` builds the command;
- ``send_one()``: one ``delay()``-equivalent call; ``fill(n)``: ``n`` messages, in batches where the
  library has them, returning the ids whose results to expect;
- ``call(timeout_s)``: one round trip, send and wait for the result;
- ``stored(ids)``: how many of those results are stored;
- optionally ``RESULT_STORE = False`` for a library that stores no results (its drain with results
  is then not measured).
"""

"""The asyncio client: ``await task.adelay()``, ``await result.aget()``, ``aready()`` and group
results, through real workers (the CLI) on real servers: Redis (pub/sub awaited on the loop),
SQLite and PostgreSQL (one backend thread per loop), RabbitMQ with ``rpc://`` (the reply queue);
bounded connections and threads under 1,000 concurrent awaits; errors as clear as the sync API's."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from conftest import Project, RedisServer, free_port
from rqueue import App, AsyncResult
from rqueue.backends import redis_async, waiting
from rqueue.backends.base import ResultRecord
from rqueue.canvas import chord, group
from rqueue.exceptions import (
    BackendError,
    BrokerConnectionError,
    ConfigurationError,
    ResultIgnoredError,
    TaskRevokedError,
    TimeoutError,
)
from rqueue.result import EagerResult, GroupResult

T = TypeVar("T")


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        "sqlite",
        pytest.param("rpc", marks=pytest.mark.rabbitmq),
        "postgres",
    ]
)
def aproject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A project on each kind of result backend the async client waits on differently."""
    kind = request.param
    if kind == "redis":
        proj = Project(tmp_path, "redis", request.getfixturevalue("redis_url"))
    elif kind == "sqlite":
        proj = Project(tmp_path, "sqlite")
    elif kind == "rpc":
        proj = Project(tmp_path, "amqp", None, request.getfixturevalue("amqp_url"))
        proj.backend_url = "rpc://"
    else:
        proj = Project(tmp_path, "postgres", postgres_url=request.getfixturevalue("postgres_url"))
    yield proj
    proj.close()


@pytest.fixture
def redis_project(tmp_path: Path, redis_url: str) -> Iterator[Project]:
    proj = Project(tmp_path, "redis", redis_url)
    yield proj
    proj.close()


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path, "sqlite")
    yield proj
    proj.close()


def run(main: Callable[[], Awaitable[T]]) -> T:
    """``main()`` on a fresh event loop, as an application's ``asyncio.run`` would."""

    async def wrapped() -> T:
        return await main()

    return asyncio.run(wrapped())


class Ticker:
    """Counts the loop's turns while awaits are pending: the longest gap shows whether it was blocked."""

    def __init__(self) -> None:
        self.longest_gap_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.longest_gap_s = max(self.longest_gap_s, now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# -- the same behaviour on every backend -----------------------------------------------------------


def test_asyncio_adelay_aget_returns_the_value_on_each_backend(aproject: Project) -> None:
    tasks = aproject.app()
    aproject.start_worker("-c", "2")

    async def main() -> tuple[Any, ...]:
        with Ticker() as ticker:
            sent = await tasks.add.adelay(2, 3)
            value = await sent.aget(timeout=30)
            slow = await tasks.sleep.aapply_async((1.5,), countdown=0)
            slow_value = await slow.aget(timeout=30)
        return sent, value, await sent.aready(), await sent.astate(), slow_value, ticker.longest_gap_s

    sent, value, ready, state, slow_value, gap_s = run(main)
    assert isinstance(sent, AsyncResult) and not isinstance(sent, EagerResult)
    assert (value, ready, state, slow_value) == (5, True, "SUCCESS", 1.5)
    assert sent.get(timeout=5) == 5  # the sync API reads the same result
    # A wait that blocked the loop would stall it for the whole 1.5 s task.
    assert gap_s < 1.0, f"the event loop stalled for {gap_s:.3f} s while awaiting"


def test_asyncio_aget_propagates_the_failure_like_get(aproject: Project) -> None:
    tasks = aproject.app()
    aproject.start_worker("-c", "2")

    async def main() -> tuple[BaseException, Any, str]:
        failed = await tasks.fail.adelay("boom")
        with pytest.raises(tasks.CustomError, match="boom") as raised:
            await failed.aget(timeout=30)
        returned = await failed.aget(timeout=30, propagate=False)
        return raised.value, returned, await failed.astate()

    raised, returned, state = run(main)
    assert isinstance(returned, tasks.CustomError) and str(returned) == str(raised) == "boom"
    assert state == "FAILURE"


def test_asyncio_aget_times_out_with_the_sync_error_and_leaves_nothing_behind(aproject: Project) -> None:
    tasks = aproject.app()
    aproject.start_worker("-c", "1")

    async def main() -> tuple[str, str, int, Any]:
        slow = await tasks.sleep.adelay(3)
        started = time.monotonic()
        with pytest.raises(TimeoutError) as raised:
            await slow.aget(timeout=0.3)
        waited = time.monotonic() - started
        assert 0.25 <= waited < 2.0, waited
        left = sum(len(w.waiting) for w in _waiters(tasks.app.backend))
        return str(raised.value), slow.id, left, await slow.aget(timeout=30)

    message, task_id, left, value = run(main)
    assert message == f"the result of task {task_id} was not ready within 0.3 s"
    assert left == 0
    assert value == 3


def test_asyncio_aget_of_a_revoked_task_raises_task_revoked(aproject: Project) -> None:
    tasks = aproject.app()
    aproject.start_worker("-c", "1", "--prefetch-multiplier", "1")

    async def main() -> tuple[str, str]:
        blocker = await tasks.sleep.adelay(1.0)  # holds the only slot while the next one is revoked
        doomed = await tasks.add.adelay(1, 1)
        await asyncio.get_running_loop().run_in_executor(None, doomed.revoke)
        with pytest.raises(TaskRevokedError) as raised:
            await doomed.aget(timeout=30)
        assert await blocker.aget(timeout=30) == 1.0
        return str(raised.value), await doomed.astate()

    message, state = run(main)
    assert "was revoked" in message and state == "REVOKED"


def test_asyncio_canvas_is_sent_and_awaited_from_the_loop(aproject: Project) -> None:
    tasks = aproject.app()
    aproject.start_worker("-c", "2")
    # rpc:// keeps no chord joins (as in Celery), and a chain's last step is sent by a worker, so
    # its reply is not one this client waits for
    chords = aproject.backend_url != "rpc://"

    async def main() -> tuple[list[Any], bool, Any, str, Any]:
        chained = await (tasks.add.s(2, 2) | tasks.add.s(8)).aapply_async() if chords else None
        members = await group(tasks.add.s(i, i) for i in range(20)).aapply_async()
        assert isinstance(members, GroupResult)
        values = await members.aget(timeout=60)
        total = None
        if chords:
            header = (tasks.add.s(i, 1) for i in range(5))
            joined = await chord(header, tasks.xsum.s()).adelay()
            total = await joined.aget(timeout=60)
        chain_value = await chained.aget(timeout=60) if chained is not None else None
        return values, await members.aready(), total, await members.astate(), chain_value

    values, ready, total, state, chain_value = run(main)
    assert chain_value == (12 if chords else None)
    assert values == [2 * i for i in range(20)]
    assert ready and state == "SUCCESS"
    assert total == (sum(i + 1 for i in range(5)) if chords else None)


def _waiters(backend: Any) -> list[Any]:
    holder = backend._redis_waiters if "_redis_waiters" in dir(type(backend)) else backend._async_waiters
    return list(holder.current())


# -- groups: propagation ------------------------------------------------------------------------------


@pytest.mark.redis
def test_asyncio_group_aget_raises_the_first_failure_and_cancels_the_rest(redis_project: Project) -> None:
    tasks = redis_project.app()
    redis_project.start_worker("-c", "2")

    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        never = tasks.add.s(1, 1).set(queue="nobody-consumes-this")  # stays PENDING
        sigs = [never, tasks.fail.s("first"), tasks.add.s(1, 1)]
        members: GroupResult = await loop.run_in_executor(None, group(sigs).apply_async)
        with pytest.raises(tasks.CustomError, match="first"):
            await members.aget(timeout=30)
        left = sum(len(w.waiting) for w in _waiters(tasks.app.backend))
        with pytest.raises(TimeoutError) as raised:
            await members.aget(timeout=0.3, propagate=False)
        return left, str(raised.value)

    left, message = run(main)
    assert left == 0  # the pending member's await was cancelled and left its waiter
    assert message == "1 of 3 results were not ready within 0.3 s"


# -- Redis: one connection set per loop, however many awaits ---------------------------------------


def _async_clients(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == redis_async.CLIENT_NAME)
    finally:
        client.close()


@pytest.mark.redis
def test_asyncio_first_sends_from_the_pool_threads_open_one_broker_and_one_backend(
    redis_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh app's first sends run in several pool threads at once; each used to open its own
    backend (its results then awaited on connections of their own) and broker."""
    import rqueue.app

    tasks = redis_project.app()
    opened: list[str] = []
    for name in ("open_broker", "open_backend"):
        real = getattr(rqueue.app, name)

        def counting(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            opened.append(_name)
            time.sleep(0.01)  # as long as a connection takes to open: the window the threads race in
            return _real(*args, **kwargs)

        monkeypatch.setattr(rqueue.app, name, counting)

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(tasks.add.adelay(i, i) for i in range(50))))

    sent = run(main)
    assert sorted(opened) == ["open_backend", "open_broker"]
    assert {id(r.backend) for r in sent} == {id(tasks.app.backend)}


@pytest.mark.redis
def test_asyncio_thousand_concurrent_awaits_share_bounded_redis_connections(redis_project: Project) -> None:
    tasks = redis_project.app()
    url = redis_project.redis_url
    assert url is not None
    bound = 1 + redis_async.COMMAND_CONNECTIONS

    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        sent = await asyncio.gather(*(tasks.add.adelay(i, i) for i in range(1000)))
        waits = asyncio.gather(*(r.aget(timeout=120) for r in sent))
        await asyncio.sleep(0.5)  # all 1,000 awaiting: no worker yet
        peak = await loop.run_in_executor(None, _async_clients, url)
        await loop.run_in_executor(None, redis_project.start_worker, "-c", "4")
        while not waits.done():
            peak = max(peak, await loop.run_in_executor(None, _async_clients, url))
            await asyncio.sleep(0.02)
        return await waits, peak

    values, peak = run(main)
    assert values == [2 * i for i in range(1000)]
    assert 1 <= peak <= bound, f"{peak} connections named {redis_async.CLIENT_NAME} (designed for {bound})"
    # closed with their loop (Redis drops a closed client from its list a moment later)
    deadline = time.monotonic() + 10
    while _async_clients(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _async_clients(url) == 0


@pytest.mark.redis
def test_asyncio_cancelled_await_unsubscribes_and_leaves_nothing(redis_project: Project) -> None:
    tasks = redis_project.app()
    redis_project.start_worker("-c", "1")
    url = redis_project.redis_url
    assert url is not None

    async def main() -> tuple[int, int]:
        slow = await tasks.sleep.adelay(2)
        pending = asyncio.ensure_future(slow.aget(timeout=30))
        channel = tasks.app.backend.key(slow.id)
        client = redis.Redis.from_url(url)
        try:
            for _ in range(200):  # subscribed once the await is under way
                if dict(client.pubsub_numsub(channel)).get(channel.encode()):
                    break
                await asyncio.sleep(0.01)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            left = sum(len(w.waiting) for w in _waiters(tasks.app.backend))
            for _ in range(200):  # the UNSUBSCRIBE goes out on the next turn of the loop
                subscribers = dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)
                if not subscribers:
                    break
                await asyncio.sleep(0.01)
            return left, int(subscribers)
        finally:
            client.close()

    left, subscribers = run(main)
    assert (left, subscribers) == (0, 0)


@pytest.mark.redis
def test_asyncio_a_second_asyncio_run_does_not_reuse_the_dead_loops_connections(redis_project: Project) -> None:
    tasks = redis_project.app()
    redis_project.start_worker("-c", "2")

    async def once(x: int) -> tuple[int, int]:
        value = await (await tasks.add.adelay(x, x)).aget(timeout=30)
        return value, len(_waiters(tasks.app.backend))

    assert run(lambda: once(1)) == (2, 1)
    assert run(lambda: once(2)) == (4, 1)  # the first loop's waiter is gone with its loop
    # A loop closed without cancelling its tasks (run_until_complete, then close): the next loop
    # does not touch what the closed one left.
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(once(5)) == (10, 1)
    loop.close()
    assert run(lambda: once(6)) == (12, 1)
    # and from a thread's own loop, beside nothing else
    out: list[tuple[int, int]] = []
    thread = threading.Thread(target=lambda: out.append(run(lambda: once(3))))
    thread.start()
    thread.join(60)
    assert out == [(6, 1)]


@pytest.mark.redis
def test_asyncio_result_stored_before_the_await_is_found(redis_project: Project) -> None:
    tasks = redis_project.app()
    redis_project.start_worker("-c", "2")
    sent = tasks.add.delay(20, 22)
    assert sent.get(timeout=30) == 42  # stored, and its notification long gone
    again = AsyncResult(sent.id, app=tasks.app)
    assert run(lambda: again.aget(timeout=10)) == 42


@pytest.mark.redis
def test_asyncio_await_survives_a_redis_restart_and_finds_the_result(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persistent=True)
    try:
        app = App("restart", broker=server.url, backend=server.url)
        backend = app.backend

        async def main() -> Any:
            pending = asyncio.ensure_future(AsyncResult("restarted-1", app=app).aget(timeout=60))
            await asyncio.sleep(0.3)  # subscribed
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
            await asyncio.sleep(0.5)  # the waiter sees the connection drop and retries meanwhile
            await asyncio.get_running_loop().run_in_executor(None, server.start)
            # Stored while the waiter may still be reconnecting: found by the GET after re-subscribing.
            backend.store(ResultRecord("restarted-1", "SUCCESS", 42))
            return await pending

        assert run(main) == 42
    finally:
        server.stop()


@pytest.mark.redis
def test_asyncio_unreachable_redis_raises_backend_error_after_the_retries(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    app = App("gone", broker=server.url, backend=server.url)
    app.conf.result_backend_max_retries = 2
    server.stop()

    async def main() -> str:
        with pytest.raises(BackendError) as raised:
            await AsyncResult("never-1", app=app).aget(timeout=30)
        return str(raised.value)

    message = run(main)
    assert "unreachable" in message and "result_backend_max_retries" in message
    assert f"127.0.0.1:{server.port}" in message


@pytest.mark.redis
def test_asyncio_await_over_tls_with_the_urls_ca(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, tls=True)
    try:
        app = App("tls", broker=server.url, backend=server.url)

        async def main() -> tuple[Any, Any]:
            pending = asyncio.ensure_future(AsyncResult("tls-1", app=app).aget(timeout=30))
            await asyncio.sleep(0.3)  # subscribed over TLS: the record arrives as a message
            app.backend.store(ResultRecord("tls-1", "SUCCESS", "over tls"))
            app.backend.store(ResultRecord("tls-2", "SUCCESS", "stored first"))
            return await pending, await AsyncResult("tls-2", app=app).aget(timeout=30)

        assert run(main) == ("over tls", "stored first")
    finally:
        server.stop()


# -- SQLite: one pool thread pair per loop, however many awaits -------------------------------------


def test_asyncio_thousand_concurrent_awaits_on_sqlite_use_a_bounded_pool(sqlite_project: Project) -> None:
    tasks = sqlite_project.app()
    sqlite_project.start_worker("-c", "4")

    before = set(threading.enumerate())

    def pool_threads() -> int:  # this test's: other tests' backends have pools of their own
        return sum(1 for t in threading.enumerate() if t.name.startswith("rqueue-results-") and t not in before)

    async def main() -> tuple[list[int], int]:
        sent = await asyncio.gather(*(tasks.add.adelay(i, 1) for i in range(1000)))
        peak = 0
        waits = asyncio.gather(*(r.aget(timeout=120) for r in sent))
        while not waits.done():
            peak = max(peak, pool_threads())
            await asyncio.sleep(0.01)
        return await waits, peak

    values, peak = run(main)
    assert values == [i + 1 for i in range(1000)]
    assert 1 <= peak <= waiting.POOL_THREADS


# -- RabbitMQ rpc://: replies awaited on the loop, woken by the extension's datagrams --------------


@pytest.mark.rabbitmq
def test_asyncio_rpc_thousand_awaits_hold_no_thread(tmp_path: Path, amqp_url: str) -> None:
    proj = Project(tmp_path, "amqp", None, amqp_url)
    proj.backend_url = "rpc://"
    try:
        tasks = proj.app()
        before = set(threading.enumerate())

        async def main() -> tuple[list[int], int, bool]:
            loop = asyncio.get_running_loop()
            sent = await asyncio.gather(*(tasks.add.adelay(i, 2) for i in range(1000)))
            waits = asyncio.gather(*(r.aget(timeout=120) for r in sent))
            await asyncio.sleep(0.3)  # all awaiting: no worker yet
            await loop.run_in_executor(None, proj.start_worker, "-c", "2")
            values = await waits
            pumps = sum(1 for t in threading.enumerate() if t.name.startswith("rqueue-results-") and t not in before)
            return values, pumps, tasks.app.backend._bell_loop is loop

        values, pumps, rung = run(main)
        assert values == [i + 2 for i in range(1000)]
        assert pumps == 0 and rung  # no pump thread: the loop itself was rung
    finally:
        proj.close()


@pytest.mark.rabbitmq
def test_asyncio_rpc_second_loop_at_the_same_time_uses_the_pump(tmp_path: Path, amqp_url: str) -> None:
    proj = Project(tmp_path, "amqp", None, amqp_url)
    proj.backend_url = "rpc://"
    try:
        tasks = proj.app()
        proj.start_worker("-c", "2")
        first_waiting = threading.Event()
        out: dict[str, Any] = {}

        async def first() -> None:  # holds the bell while the second loop awaits
            slow = await tasks.sleep.adelay(1.5)
            first_waiting.set()
            out["first"] = await slow.aget(timeout=30)
            out["bell"] = tasks.app.backend._bell_loop is asyncio.get_running_loop()

        async def second() -> None:
            first_waiting.wait(30)
            out["second"] = await (await tasks.add.adelay(20, 22)).aget(timeout=30)
            loop = asyncio.get_running_loop()
            out["pumped"] = any(w.loop is loop for w in tasks.app.backend._async_waiters.current())

        threads = [threading.Thread(target=asyncio.run, args=(make(),)) for make in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert out["first"] == 1.5 and out["second"] == 42
        assert out["bell"] is True and out["pumped"] is True  # the first loop rung, the second pumped
    finally:
        proj.close()


# -- bad input: the sync API's errors, nothing lost ---------------------------------------------------


@pytest.mark.redis
def test_asyncio_without_a_backend_aget_raises_the_sync_error(tmp_path: Path, redis_url: str) -> None:
    app = App("nobackend", broker=redis_url)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def main() -> tuple[str, str]:
        sent = await add.adelay(1, 2)
        with pytest.raises(ConfigurationError) as awaited:
            await sent.aget(timeout=1)
        with pytest.raises(ConfigurationError) as synced:
            sent.get(timeout=1)
        return str(awaited.value), str(synced.value)

    awaited, synced = run(main)
    assert awaited == synced and "no result backend is configured" in awaited
    assert app.broker.queue_length("celery") == 1  # the task itself was sent


def test_asyncio_adelay_checks_arguments_in_the_caller(sqlite_project: Project) -> None:
    tasks = sqlite_project.app()

    async def main() -> None:
        with pytest.raises(TypeError, match="missing a required argument"):
            await tasks.add.adelay(1)
        with pytest.raises(TypeError, match="unknown send option"):
            await tasks.add.aapply_async((1, 2), no_such_option=1)

    run(main)
    assert tasks.app.broker.queue_length("celery") == 0  # nothing half-sent


def test_asyncio_ignored_result_fails_fast(sqlite_project: Project) -> None:
    tasks = sqlite_project.app()

    async def main() -> None:
        sent = await tasks.ignored.adelay(1)
        with pytest.raises(ResultIgnoredError):
            await sent.aget(timeout=5)

    run(main)


def test_asyncio_unreachable_broker_fails_like_delay_without_freezing_the_loop(tmp_path: Path) -> None:
    app = App("down", broker=f"redis://127.0.0.1:{free_port()}/0", backend=f"sqlite:///{tmp_path / 'r.db'}")
    # Publishing retries for about 2.5 s (0.5 + 1 + 1) before it gives up: a loop that published
    # inline would stall that long.
    app.conf.broker_connection_timeout = 5.0
    app.conf.task_publish_retry_policy = {
        "max_retries": 3,
        "interval_start": 0.5,
        "interval_step": 0.5,
        "interval_max": 1,
    }

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def main() -> tuple[str, float]:
        with Ticker() as ticker, pytest.raises(BrokerConnectionError) as raised:
            await add.adelay(1, 2)
        return str(raised.value), ticker.longest_gap_s

    message, gap_s = run(main)
    assert "127.0.0.1" in message
    assert gap_s < 1.0, f"the event loop stalled for {gap_s:.3f} s while the broker was down"


def test_asyncio_aget_outside_a_running_loop_is_refused(sqlite_project: Project) -> None:
    tasks = sqlite_project.app()
    sent = tasks.add.delay(1, 2)
    coroutine = sent.aget(timeout=1)
    with pytest.raises(RuntimeError, match="no running event loop"):
        coroutine.send(None)
    coroutine.close()


def test_asyncio_eager_adelay_runs_here(sqlite_project: Project) -> None:
    tasks = sqlite_project.app()
    tasks.app.conf.task_always_eager = True
    try:
        sent = run(lambda: tasks.add.adelay(3, 4))
        assert isinstance(sent, EagerResult)
        assert run(sent.aget) == 7
    finally:
        tasks.app.conf.task_always_eager = False

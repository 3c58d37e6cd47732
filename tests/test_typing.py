"""The public API is typed: a type checker accepts correct calls and rejects wrong ones."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SNIPPET = textwrap.dedent("""
    from rqueue import App, AsyncResult

    app = App("tasks")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(bind=True, name="tasks.bound")
    def bound(self: object, text: str) -> str:
        return text

    ok: AsyncResult[int] = add.delay(1, 2)
    value: int = ok.get(timeout=1)
    also_ok: AsyncResult[str] = bound.delay("a")
    direct: int = add(1, 2)
    reveal_type(add.delay(1, 2))
    add.delay("x", 2)  # error
    bound.delay(1)  # error
    add.delay(1)  # error

    async def use() -> None:
        sent: AsyncResult[int] = await add.adelay(1, 2)
        got: int = await sent.aget(timeout=1)
        ready: bool = await sent.aready()
        reveal_type(await add.aapply_async((1, 2), countdown=1))
        reveal_type(await sent.aget())
        await add.adelay("x", 2)  # error
        await add.aapply_async((1, 2), no_such_option=1)  # error
        text: str = await sent.aget()  # error
""")


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("typing") / "snippet.py"
    path.write_text(SNIPPET)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(path).parent,
    )
    return result.stdout


def test_typing_delay_returns_async_result_of_the_return_type(mypy_output: str) -> None:
    assert 'Revealed type is "rqueue.result.AsyncResult[int]"' in mypy_output


def test_typing_wrong_argument_types_are_rejected(mypy_output: str) -> None:
    errors = [int(line.split(":")[1]) for line in mypy_output.splitlines() if ": error:" in line]
    expected = [n for n, line in enumerate(SNIPPET.splitlines(), start=1) if line.endswith("# error")]
    assert errors == expected, mypy_output


def test_typing_async_api_is_typed_like_the_sync_one(mypy_output: str) -> None:
    revealed = [line for line in mypy_output.splitlines() if "Revealed type" in line]
    assert 'Revealed type is "rqueue.result.AsyncResult[int]"' in revealed[1], mypy_output
    assert 'Revealed type is "int"' in revealed[2], mypy_output

"""A FastAPI app that sends one rqueue task per request and awaits its result on the event loop.

``await add.adelay(x, y)`` publishes without blocking the loop, and ``await result.aget()`` waits
on the result backend's shared pub/sub connection (Redis) or its one pump thread (SQLite): while a
request waits, the server keeps answering the others. Run it (see README.md):

    rqueue -A tasks worker --loglevel=info &
    uvicorn web:api --port 8000
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from tasks import add, divide

from rqueue.exceptions import TimeoutError as ResultTimeout

#: How long a request waits for its task before answering 504.
RESULT_TIMEOUT_S = 60.0

api = FastAPI(title="rqueue asyncio example")


@api.get("/add")
async def add_numbers(x: int, y: int) -> dict[str, Any]:
    """Send ``add(x, y)`` to a worker and answer with its result."""
    result = await add.adelay(x, y)
    try:
        value = await result.aget(timeout=RESULT_TIMEOUT_S)
    except ResultTimeout:
        raise HTTPException(504, f"task {result.id} did not finish within {RESULT_TIMEOUT_S} s") from None
    return {"task_id": result.id, "result": value}


@api.get("/divide")
async def divide_numbers(x: float, y: float) -> dict[str, Any]:
    """A task that can fail: its exception is re-raised by ``aget`` and answered as 422."""
    result = await divide.adelay(x, y)
    try:
        return {"task_id": result.id, "result": await result.aget(timeout=RESULT_TIMEOUT_S)}
    except ZeroDivisionError as exc:
        raise HTTPException(422, f"task {result.id} failed: {exc}") from None


@api.get("/ping")
async def ping() -> dict[str, bool]:
    """Answered at once, however many requests are waiting for tasks."""
    return {"pong": True}

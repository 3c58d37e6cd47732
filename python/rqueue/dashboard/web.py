"""The dashboard's HTTP face: one page, a JSON API it polls, the actions, and ``/metrics``.

Starlette, a small well-kept ASGI toolkit: routes and JSON responses without a framework's
weight, served by uvicorn. The page is one static file with its own script (no build step, no
CDN: it works where the cluster has no internet). Actions that change state (requeue, purge,
rate limit) need the token as ``Authorization: Bearer <token>``; so do reads when the dashboard
listens beyond loopback. A header, not a cookie, carries it, so another site cannot forge a request.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rqueue.exceptions import RQueueError

if TYPE_CHECKING:
    from rqueue.dashboard import Dashboard

Handler = Callable[[Request], Awaitable[Response]]

#: The largest request body an action accepts, in bytes (ids of dead letters to requeue).
MAX_BODY_BYTES = 1 << 20


class BadRequest(ValueError):
    """The request lacks something or carries a wrong value: answered 400 with the reason."""


class Api:
    """The handlers of one dashboard; ``routes`` wraps each in the token check."""

    def __init__(self, dashboard: Dashboard, token: str, protect_reads: bool) -> None:
        self.dashboard, self.token, self.protect_reads = dashboard, token, protect_reads
        self.page = resources.files("rqueue.dashboard").joinpath("page.html").read_text(encoding="utf-8")

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index),  # the page holds no data; its script asks the API (with the token)
            Route("/api/state", self.guarded(self.state, write=False)),
            Route("/api/dead-letters", self.guarded(self.dead_letters, write=False)),
            Route("/api/dead-letters/requeue", self.guarded(self.requeue, write=True), methods=["POST"]),
            Route("/api/dead-letters/purge", self.guarded(self.purge, write=True), methods=["POST"]),
            Route("/api/rate-limit", self.guarded(self.rate_limit, write=True), methods=["POST"]),
            Route("/metrics", self.guarded(self.metrics, write=False)),
        ]

    def authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def guarded(self, handler: Handler, write: bool) -> Handler:
        async def guard(request: Request) -> Response:
            if (write or self.protect_reads) and not self.authorized(request):
                return JSONResponse(
                    {"error": "this needs the dashboard's token (Authorization: Bearer <token>)"}, status_code=401
                )
            try:
                return await handler(request)
            except BadRequest as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except RQueueError as exc:  # the broker refused or is away: say so, keep serving
                return JSONResponse({"error": str(exc)}, status_code=502)

        return guard

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page, headers={"Cache-Control": "no-store"})

    async def state(self, request: Request) -> Response:
        return JSONResponse(self.dashboard.view())

    async def dead_letters(self, request: Request) -> Response:
        queue = request.query_params.get("queue") or self.dashboard.default_queue
        return JSONResponse({"queue": queue, "dead_letters": self.dashboard.dead_letters(queue)})

    async def requeue(self, request: Request) -> Response:
        data = await _body(request)
        queue = _text(data, "queue")
        ids = data.get("ids")
        if data.get("all") is True:
            ids = None
        elif not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise BadRequest(f"'ids' must be a non-empty list of dead letter ids (or 'all': true), got {ids!r}")
        return JSONResponse({"requeued": self.dashboard.requeue_dead(queue, ids)})

    async def purge(self, request: Request) -> Response:
        return JSONResponse({"purged": self.dashboard.purge_dead(_text(await _body(request), "queue"))})

    async def rate_limit(self, request: Request) -> Response:
        data = await _body(request)
        task, rate = _text(data, "task"), data.get("rate")
        if not isinstance(rate, str):
            raise BadRequest(f"'rate' must be a string like '10/m' ('' for no limit), got {rate!r}")
        try:
            replies = self.dashboard.set_rate_limit(task, rate)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return JSONResponse({"task": task, "rate": rate, "replies": replies})

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(self.dashboard.metrics_text(), media_type="text/plain; version=0.0.4")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"request body over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def create_web_app(dashboard: Dashboard, token: str, protect_reads: bool) -> Starlette:
    """The ASGI app of ``dashboard``; ``token`` guards actions (and reads with ``protect_reads``)."""
    return Starlette(routes=Api(dashboard, token, protect_reads).routes())

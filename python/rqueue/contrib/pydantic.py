"""``@app.task(pydantic=True)``: arguments validated and converted by pydantic from their annotations,
and a pydantic model returned is dumped to a dict, as Celery 5.5 does (pydantic must be installed)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rqueue.exceptions import ConfigurationError

if TYPE_CHECKING:
    from rqueue.task import Task


def validating(task: Task[Any, Any], body: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``body``: each annotated argument goes through ``TypeAdapter(annotation).validate_python``
    (``pydantic_strict``, ``pydantic_context``), and a ``BaseModel`` return value is
    ``model_dump(**pydantic_dump_kwargs)``-ed (default ``mode='json'``)."""
    try:
        import pydantic  # noqa: PLC0415 - an optional dependency
    except ImportError:
        raise ConfigurationError(
            f"task {task.name}: pydantic=True needs pydantic; install it (pip install 'rqueue[pydantic]')"
        ) from None
    target = task.fun if task.fun is not None else body
    signature = inspect.signature(target)
    try:
        hints = inspect.get_annotations(target, eval_str=True)
    except NameError as exc:  # an annotation names something not visible at module level
        raise ConfigurationError(f"task {task.name}: pydantic=True cannot resolve an annotation: {exc}") from exc
    parameters = list(signature.parameters.values())
    if task.bind and task.fun is not None:
        parameters = parameters[1:]
    adapters = {
        p.name: pydantic.TypeAdapter(hints[p.name])
        for p in parameters
        if p.name in hints and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    bound_signature = signature.replace(parameters=parameters)
    options = task.options
    strict = options.get("pydantic_strict", False)
    context = options.get("pydantic_context")
    dump_kwargs = {"mode": "json", **(options.get("pydantic_dump_kwargs") or {})}

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = bound_signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            adapter = adapters.get(name)
            if adapter is not None:
                bound.arguments[name] = adapter.validate_python(value, strict=strict, context=context)
        result = body(*bound.args, **bound.kwargs)
        if isinstance(result, pydantic.BaseModel):
            return result.model_dump(**dump_kwargs)
        return result

    return run

"""Serializers by name, and the safe round trip of exceptions through a result backend.

``json`` and ``msgpack`` run in Rust. ``pickle`` is a Python-side opt-in: it works only when the
setting that uses it *and* ``accept_content`` name it, because unpickling runs arbitrary code.
"""

from __future__ import annotations

import builtins
import pickle
import sys
from collections.abc import Iterable
from typing import Any

from rqueue import _rqueue
from rqueue.config import CONTENT_TYPE_NAMES
from rqueue.exceptions import CELERY_MODULES, CELERY_NAMES, ContentDisallowed, DecodeError, RemoteError

PICKLE_CONTENT_TYPE = "application/x-python-serialize"


def content_type(serializer: str) -> str:
    """MIME type of a serializer name."""
    return _rqueue.content_type_of(serializer)[0]


def serializer_name(content_type_or_name: str) -> str:
    """Short name (json, msgpack, pickle) of a MIME type or name."""
    return CONTENT_TYPE_NAMES.get(content_type_or_name, content_type_or_name)


def accepted_content_types(accept: Iterable[str]) -> list[str]:
    """MIME types of an ``accept_content`` list (names or MIME types)."""
    return [content_type(serializer_name(item)) for item in accept]


def dumps(obj: object, serializer: str) -> bytes:
    """Serialize ``obj``; pickle only here, never in Rust."""
    if serializer == "pickle":
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _rqueue.dumps(obj, serializer)


def loads(data: bytes, content_type_: str, accept: list[str]) -> Any:
    """Deserialize after checking the content type against ``accept`` (MIME types)."""
    if content_type_ not in accept:
        raise ContentDisallowed(f"content type {content_type_!r} is not accepted (accept_content allows: {accept})")
    if content_type_ == PICKLE_CONTENT_TYPE:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise DecodeError(f"bad pickle payload: {exc}") from exc
    return _rqueue.loads(data, content_type_)


# -- exceptions in results -------------------------------------------------------------------------


def exception_to_meta(exc: BaseException) -> dict[str, Any]:
    """Celery's exception record: qualified type name, module and the args as a list."""
    cls = type(exc)
    message: list[Any] = [_plain(arg) for arg in exc.args]
    module = CELERY_MODULES.get(cls, cls.__module__)
    return {"exc_type": CELERY_NAMES.get(cls, cls.__qualname__), "exc_message": message, "exc_module": module}


def _plain(value: Any) -> Any:
    """Exception args that the codecs cannot carry become their repr."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v) for k, v in value.items()}
    return repr(value)


def exception_from_meta(meta: Any) -> BaseException:
    """Rebuild an exception from a result, safely.

    Only classes already imported in this process and deriving from BaseException are used; a
    module named in a result is never imported. Anything else becomes ``RemoteError``.
    """
    if not isinstance(meta, dict):
        return RemoteError("Exception", None, str(meta))
    exc_type = str(meta.get("exc_type") or "Exception")
    exc_module = meta.get("exc_module")
    raw = meta.get("exc_message")
    args = tuple(raw) if isinstance(raw, (list, tuple)) else (raw,) if raw is not None else ()
    cls = _find_class(exc_module if isinstance(exc_module, str) else None, exc_type)
    if cls is not None:
        try:
            return cls(*args)
        except Exception:  # the constructor wants other arguments: keep type name and message
            pass
    message = " ".join(str(a) for a in args)
    return RemoteError(exc_type, exc_module if isinstance(exc_module, str) else None, message)


#: Modules of Celery's standard exceptions: a result naming one reads back as rqueue's class of
#: that name (``rqueue.exceptions`` carries Celery's names), so ``except TaskRevokedError`` works
#: whether a Celery or an rqueue worker stored it, and whether or not Celery is imported here.
_CELERY_EXCEPTION_MODULES = frozenset({"celery.exceptions", "billiard.exceptions"})


def _find_class(module_name: str | None, qualname: str) -> type[BaseException] | None:
    if module_name in _CELERY_EXCEPTION_MODULES:
        ours = getattr(sys.modules["rqueue.exceptions"], qualname, None)
        if isinstance(ours, type) and issubclass(ours, BaseException):
            return ours
    module = builtins if module_name in (None, "builtins", "exceptions") else sys.modules.get(module_name or "")
    if module is None:
        return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None

"""The one-line form of an event that ``rqueue events --dump`` prints (that of ``celery events --dump``)."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

#: How worker event types read in the dump.
HUMAN_TYPES = {"worker-offline": "shutdown", "worker-online": "started", "worker-heartbeat": "heartbeat"}
#: How many task names (by id, from their received/sent events) are remembered for later lines.
NAMES_KEPT = 4096
#: Fields every line shows in its own place, not in the field list.
_SHOWN = ("type", "hostname", "timestamp", "local_received")


class TaskNames(OrderedDict[str, str]):
    """The ``name(id) args=... kwargs=...`` of recent tasks, by id (least recently added forgotten)."""

    def remember(self, task_id: str, text: str) -> None:
        self[task_id] = text
        if len(self) > NAMES_KEPT:
            self.popitem(last=False)


def format_event(event: dict[str, Any], names: TaskNames | None = None) -> str:
    """``hostname [time] what: fields``; task events also name their task (from ``names``)."""
    fields = {k: v for k, v in event.items() if k not in _SHOWN}
    kind = str(event.get("type", "?")).lower()
    try:
        when = str(datetime.fromtimestamp(float(event.get("timestamp", 0)), timezone.utc))
    except (TypeError, ValueError, OverflowError):
        when = repr(event.get("timestamp"))
    head = f"{event.get('hostname')} [{when}] {HUMAN_TYPES.get(kind, kind.replace('-', ' '))}"
    task = ""
    if kind.startswith("task-"):
        task_id = str(fields.pop("uuid", ""))
        if kind in ("task-received", "task-sent"):
            name, args, kwargs = fields.pop("name", None), fields.pop("args", None), fields.pop("kwargs", None)
            task = f"{name}({task_id}) args={args} kwargs={kwargs}"
            if names is not None:
                names.remember(task_id, task)
        else:
            task = (names.get(task_id, "") if names is not None else "") or f"({task_id})"
    listed = ", ".join(f"{key}={fields[key]}" for key in sorted(fields))
    parts = [head + (":" if listed or task else "")]
    if task:
        parts.append(task)
    if listed:
        parts.append(listed)
    return " ".join(parts)

"""Celery's event protocol, so Flower, ``celery events`` and existing exporters watch rqueue.

Workers send ``worker-online``, ``worker-heartbeat`` (every ``HEARTBEAT_S``) and
``worker-offline`` always, and task events (``task-received``, ``-started``, ``-succeeded``,
``-failed``, ``-retried``, ``-revoked``, ``-rejected``) with ``-E`` / ``worker_send_task_events``
or after the ``enable_events`` control command; producers send ``task-sent`` with
``task_send_sent_event``. ``EventReceiver`` reads them back from any broker; ``format_event`` is
the one-line form ``rqueue events --dump`` prints.
"""

from rqueue.events.dispatcher import SOFTWARE_INFO, EventDispatcher, routing_key, utcoffset
from rqueue.events.dump import format_event
from rqueue.events.receiver import EventReceiver, MalformedEvent, decode_events

#: Seconds between a worker's heartbeats (Celery's ``freq``); a monitor counts a worker alive
#: while less than twice this passed since its last one.
HEARTBEAT_S = 2.0

__all__ = [
    "HEARTBEAT_S",
    "SOFTWARE_INFO",
    "EventDispatcher",
    "EventReceiver",
    "MalformedEvent",
    "decode_events",
    "format_event",
    "routing_key",
    "utcoffset",
]

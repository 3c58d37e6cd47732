"""Node names and the file names made from them: Celery's ``%`` expansions in ``-n``, ``--logfile``
and ``--pidfile``, and the prefork process index behind ``%i``/``%I``.

``%h`` host name, ``%n`` its first part (in a file name: the node's name part), ``%d`` its domain,
``%p`` the full node name (file names), ``%i`` the prefork process index (0 in the main process,
1.. in the children), ``%I`` the same with a ``-`` before it (empty in the main process), ``%%`` a
percent sign. A ``%i`` in ``--logfile`` gives each prefork child a log file of its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import socket

from rqueue.exceptions import ConfigurationError

#: What a prefork child is called (``rqueue.worker.pool``); its number is the process index.
_CHILD_NAME = re.compile(r"ForkPoolWorker-(\d+)")
_FORMAT = re.compile(r"%(.)", re.DOTALL)


def current_process_index() -> int:
    """This process's index in the prefork pool: 1.. in a child, 0 in the main (or any other) process."""
    found = _CHILD_NAME.fullmatch(multiprocessing.current_process().name)
    return int(found.group(1)) if found else 0


def host_format(template: str, *, what: str = "-n") -> str:
    """A ``-n`` node name: ``%h``, ``%n``, ``%d``, ``%%`` expanded, and ``%i``/``%I`` as in the main
    process (``0``, empty), as Celery does; an unknown ``%x`` is an error."""
    return _expand(template, {**_host_keys("%d" in template), "i": "0", "I": ""}, what)


def node_format(template: str, node: str, *, index: int | None = None, what: str = "file name") -> str:
    """A file name for ``node`` (``name@host``): the ``-n`` expansions (``%n`` being the node's name
    part), ``%p`` the node name, and ``%i``/``%I`` the process ``index`` (this process's by default)."""
    name, _, host = node.rpartition("@")
    keys = _host_keys("%d" in template, host or None)
    if name:
        keys["n"] = name
    index = current_process_index() if index is None else index
    keys.update(p=node, i=str(index), I=f"-{index}" if index else "")
    return _expand(template, keys, what)


def has_process_index(template: str) -> bool:
    """Whether the name differs per prefork process (``%i`` or ``%I``, not ``%%i``)."""
    return any(m.group(1) in "iI" for m in _FORMAT.finditer(template))


def log_per_process(logfile_template: str, node: str) -> None:
    """With ``%i``/``%I`` in ``--logfile``: each prefork child, as it starts, moves the root logger's
    file handlers to its own file (the main process keeps index 0's)."""
    from rqueue import signals  # noqa: PLC0415 - only a worker with such a log file needs it

    def reopen(**_: object) -> None:
        path = node_format(logfile_template, node)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) and handler.baseFilename != path:
                handler.close()
                handler.baseFilename = path
                handler.stream = handler._open()

    signals.worker_process_init.connect(weak=False)(reopen)


def _host_keys(fqdn: bool, host: str | None = None) -> dict[str, str]:
    host = host or (socket.getfqdn() if fqdn else socket.gethostname())
    name, _, domain = host.partition(".")
    return {"h": host, "n": name, "d": domain, "%": "%"}


def _expand(template: str, keys: dict[str, str], what: str) -> str:
    def one(found: re.Match[str]) -> str:
        key = found.group(1)
        if key not in keys:
            known = ", ".join(f"%{k}" for k in keys if k != "%")
            raise ConfigurationError(f"{what} {template!r}: unknown expansion %{key} (known: {known}, %%)")
        return keys[key]

    return _FORMAT.sub(one, template)

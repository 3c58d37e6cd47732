"""Running the worker as a daemon (``--detach``, ``--uid``, ``--gid``, ``--umask``, ``--workdir``):
double fork and setsid, working directory, umask, the log file and pidfile made before privileges are
dropped (owned by the new user), and the standard streams sent to /dev/null.

Celery's semantics, with one addition: the command that detaches waits until the worker is ready
(or failed), so a bad broker URL, a held pidfile or an import error is reported on its terminal
with a non-zero exit instead of only in the log file.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import sys
import time
from dataclasses import dataclass

from rqueue import signals
from rqueue.exceptions import ConfigurationError
from rqueue.worker import release_pidfile, take_pidfile

#: What the detached worker writes to the waiting command once it is ready.
READY = b"\0rqueue-worker-ready\n"
#: How long the detaching command waits for the worker to be ready before leaving it to start alone.
READY_WAIT_S = 60.0


def parse_uid(value: str) -> tuple[int, str | None]:
    """A ``--uid``: a user name or number; ``(uid, user name when known)``."""
    import pwd  # noqa: PLC0415 - POSIX only

    try:
        entry = pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except KeyError:
        if value.isdigit():
            return int(value), None
        raise ConfigurationError(f"--uid {value}: no such user") from None
    return entry.pw_uid, entry.pw_name


def parse_gid(value: str) -> int:
    """A ``--gid``: a group name or number."""
    import grp  # noqa: PLC0415 - POSIX only

    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigurationError(f"--gid {value}: no such group") from None


def parse_umask(value: str) -> int:
    """A ``--umask``, read as Celery reads it: octal with a leading zero (``022``, ``0o22``), else decimal."""
    try:
        mask = int(value, 8 if value.startswith("0") else 10)
    except ValueError:
        raise ConfigurationError(f"--umask {value}: not a number (write it in octal, e.g. 022)") from None
    if not 0 <= mask <= 0o777:
        raise ConfigurationError(f"--umask {value}: must be between 0 and 0777")
    return mask


@dataclass
class Daemon:
    """How the worker process is set up before it starts; every option checked at construction,
    before anything forks, so a mistake is an error on the terminal.

    Args:
        detach: Run in the background (double fork, new session, streams to /dev/null).
        logfile: The log file (required with ``detach``); made, and given to ``uid``/``gid``, before
            privileges are dropped. Relative to ``workdir``.
        pidfile: Made exclusively (never through a symbolic link) before privileges are dropped.
        uid: User name or id to run as (root only).
        gid: Group name or id to run as (default with ``uid``: the user's primary group).
        umask: The process's umask (``parse_umask``).
        workdir: The working directory (default: the current one, as Celery's detach).
    """

    detach: bool = False
    logfile: str | None = None
    pidfile: str | None = None
    uid: str | None = None
    gid: str | None = None
    umask: str | None = None
    workdir: str | None = None

    def __post_init__(self) -> None:
        if (self.detach or self.uid or self.gid) and not hasattr(os, "fork"):
            raise ConfigurationError("--detach, --uid and --gid need a POSIX system")
        if self.detach and not self.logfile:
            raise ConfigurationError(
                "--detach needs --logfile: a detached worker's output goes to /dev/null, its log would be lost"
            )
        self._uid: int | None = None
        self._user: str | None = None
        if self.uid:
            self._uid, self._user = parse_uid(self.uid)
        self._gid = parse_gid(self.gid) if self.gid else None
        if self._uid is not None and self._gid is None:
            import pwd  # noqa: PLC0415 - POSIX only

            with contextlib.suppress(KeyError):
                self._gid = pwd.getpwuid(self._uid).pw_gid
        self._umask = parse_umask(self.umask) if self.umask is not None else None
        wanted = {self._uid, self._gid} - {None, os.getuid(), os.getgid()}
        if wanted and os.geteuid() != 0:
            raise ConfigurationError(
                f"--uid/--gid: only root can change the user or group (running as uid {os.geteuid()})"
            )
        if self.workdir is not None and not os.path.isdir(self.workdir):
            raise ConfigurationError(f"--workdir {self.workdir}: no such directory")
        self._pid = os.getpid()

    def enter(self) -> None:
        """Become the worker process: detach (the calling process waits for the worker to be ready
        and exits), chdir, umask, make the log file and pidfile, drop privileges."""
        if self.detach:
            self._detach()
        if self.workdir is not None:
            os.chdir(self.workdir)
        if self._umask is not None:
            os.umask(self._umask)
        if self.logfile:
            self.logfile = os.path.abspath(self.logfile)
            self._make_logfile(self.logfile)
        if self.pidfile:
            self.pidfile = take_pidfile(os.path.abspath(self.pidfile))
            atexit.register(release_pidfile, self.pidfile)  # also when the worker fails before it starts
            self._give(self.pidfile)
        self._drop_privileges()
        if self.detach:
            signals.worker_ready.connect(weak=False)(self._on_ready)
            signals.worker_process_init.connect(weak=False)(self._on_child_start)

    # -- detaching ------------------------------------------------------------------------------------

    def _detach(self) -> None:
        """Double fork: the caller waits on a pipe for the worker to say it is ready (printing what the
        worker writes to stderr until then) and exits; the worker returns in a new session."""
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        first = os.fork()
        if first:
            os.close(write_end)
            os.waitpid(first, 0)
            sys.exit(_wait_until_ready(read_end, self.logfile or ""))
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)  # the session leader goes: the worker can never regain a terminal
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(null, fd)
        os.dup2(write_end, 2)  # until ready, errors reach the command that detached
        os.close(null)
        os.close(write_end)
        self._pid = os.getpid()

    def _on_ready(self, **_: object) -> None:
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            os.write(2, READY)
        _stderr_to_null()

    def _on_child_start(self, **_: object) -> None:
        """A prefork child must not hold the pipe open (nor write to it); the solo pool's process,
        which announces itself the same way, still has to say it is ready."""
        if os.getpid() != self._pid:
            _stderr_to_null()

    # -- files and privileges -------------------------------------------------------------------------

    def _make_logfile(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as exc:
            raise ConfigurationError(f"--logfile {path}: cannot write it: {exc.strerror}") from None
        os.close(fd)
        self._give(path)

    def _give(self, path: str) -> None:
        """Make ``path`` the new user's and group's (when changing them)."""
        if self._uid is None and self._gid is None:
            return
        os.chown(path, -1 if self._uid is None else self._uid, -1 if self._gid is None else self._gid)

    def _drop_privileges(self) -> None:
        """Group first (setgid needs root), supplementary groups, then user; then check root cannot be regained."""
        if self._gid is not None and self._gid != os.getgid():
            os.setgid(self._gid)
        if self._uid is not None and self._uid != os.getuid():
            if self._user is not None:
                os.initgroups(self._user, self._gid if self._gid is not None else os.getgid())
            else:
                os.setgroups([])
            os.setuid(self._uid)
            if self._uid != 0:
                try:
                    os.setuid(0)
                except PermissionError:
                    pass
                else:
                    raise ConfigurationError("--uid: root privileges could be regained after dropping them")


def _stderr_to_null(**_: object) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


def _wait_until_ready(read_end: int, logfile: str) -> int:
    """In the command that detached: copy what the worker says to stderr until it is ready (exit 0),
    exits (1), or ``READY_WAIT_S`` pass (0, with a note)."""
    deadline = time.monotonic() + READY_WAIT_S
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"The worker has not said it is ready after {READY_WAIT_S:g} s; see {logfile}", file=sys.stderr)
            return 0
        readable, _, _ = select.select([read_end], [], [], left)
        if not readable:
            continue
        chunk = os.read(read_end, 65536)
        received += chunk
        if READY in received:
            sys.stderr.write(received.split(READY)[0].decode(errors="replace"))
            return 0
        if not chunk:  # the worker exited before it was ready
            sys.stderr.write(received.decode(errors="replace"))
            return 1

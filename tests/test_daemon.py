"""``rqueue worker --detach`` and ``--uid/--gid/--umask/--workdir``, with real detached workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PROJECT, Project

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="watches the detached worker through /proc (Linux)")


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper that is not us counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running after {timeout} s"
        time.sleep(0.05)


@contextlib.contextmanager
def _detached(project: Project, pidfile: Path, *args: str) -> Iterator[int]:
    """Start a detached worker; its pid (from the pidfile). It is killed, with its children, if the test fails."""
    done = project.run_cli("-A", "tasks", "worker", "--detach", "--pidfile", str(pidfile), "-l", "info", *args)
    assert done.returncode == 0, done.stderr
    assert "has not said it is ready" not in done.stderr  # it said so: the command returned at once
    pid = int(pidfile.read_text())
    try:
        yield pid
    finally:
        if not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_detached_worker_runs_tasks_and_stops_on_sigterm(project: Project) -> None:
    tasks = project.app()
    pidfile, log = project.root / "w.pid", project.root / "w.log"
    with _detached(project, pidfile, "--logfile", str(log), "-c", "1") as pid:
        assert os.getsid(pid) != os.getsid(0)  # a session of its own: no terminal to lose
        assert tasks.process_info.delay().get(timeout=30)["pid"] != pid  # a prefork child of the detached worker
        assert "ready." in log.read_text()
        assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)] == ["/dev/null"] * 3
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)
        assert not pidfile.exists()
        assert "Warm shutdown" in log.read_text()


def test_detach_applies_workdir_and_umask(project: Project) -> None:  # and the solo pool detaches too
    tasks = project.app()
    workdir = project.root / "run"
    workdir.mkdir()
    pidfile = project.root / "w.pid"
    with _detached(
        project, pidfile, "--logfile", "w.log", "--workdir", str(workdir), "--umask", "027", "-P", "solo"
    ) as pid:
        info = tasks.process_info.delay().get(timeout=30)
        assert info["cwd"] == str(workdir) and info["umask"] == 0o027 and info["pid"] == pid
        log = workdir / "w.log"  # relative to the working directory, as Celery's
        assert stat.S_IMODE(log.stat().st_mode) == 0o640
        assert stat.S_IMODE(pidfile.stat().st_mode) == 0o640
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)


def test_umask_and_workdir_apply_without_detach_too(project: Project) -> None:
    tasks = project.app()
    workdir = project.root / "run"
    workdir.mkdir()
    worker = project.start_worker("-c", "1", "--workdir", str(workdir), "--umask", "077")
    info = tasks.process_info.delay().get(timeout=30)
    assert info["cwd"] == str(workdir) and info["umask"] == 0o077
    worker.stop()


def test_detach_reports_a_failure_to_start_on_the_terminal(project: Project) -> None:
    pidfile = project.root / "w.pid"
    env = {**project.env, "TEST_BROKER_URL": "kafka://nowhere"}
    done = project.run_cli(
        "-A", "tasks", "worker", "--detach", "--logfile", "w.log", "--pidfile", str(pidfile), env=env
    )  # fmt: skip
    assert done.returncode == 1
    assert "unknown URL scheme 'kafka'" in done.stderr and "Traceback" not in done.stderr
    assert not pidfile.exists()  # removed by the worker that failed


def test_detach_refuses_a_pidfile_held_by_a_live_worker(project: Project) -> None:
    pidfile = project.root / "w.pid"
    first = project.start_worker("-c", "1", "--pidfile", str(pidfile))
    done = project.run_cli("-A", "tasks", "worker", "--detach", "--logfile", "w.log", "--pidfile", str(pidfile))
    assert done.returncode == 1 and "is held by a running worker" in done.stderr
    assert pidfile.read_text().strip() == str(first.proc.pid)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--detach"], "--detach needs --logfile"),
        (["--uid", "no-such-user-rq"], "--uid no-such-user-rq: no such user"),
        (["--gid", "no-such-group-rq"], "--gid no-such-group-rq: no such group"),
        (["--umask", "22x"], "--umask 22x: not a number"),
        (["--umask", "01000"], "--umask 01000: must be between 0 and 0777"),
        (["--workdir", "/no/such/dir"], "--workdir /no/such/dir: no such directory"),
        (["--logfile", "w%q.log"], "--logfile 'w%q.log': unknown expansion %q"),
    ],
)
def test_bad_daemon_options_are_clear_errors_before_forking(tmp_path: Path, options: list[str], error: str) -> None:
    project = Project(tmp_path, "sqlite")
    logfile = [] if "--logfile" in options or options == ["--detach"] else ["--logfile", "w.log"]
    done = project.run_cli("-A", "tasks", "worker", "--detach", *logfile, *options)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: {error}") and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("w*.log"))  # nothing started


def test_uid_and_gid_change_need_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: the error is for other users")
    done = Project(tmp_path, "sqlite").run_cli("-A", "tasks", "worker", "--uid", "0")
    assert done.returncode == 2 and "only root can change the user or group" in done.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory ``nobody`` may read and write (pytest's temporary directories are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="rqueue-uid-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _readable_by(uid: int, gid: int, path: str) -> bool:
    """Whether that user can read ``path`` (tried in a forked child that becomes them)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(gid)
            os.setuid(uid)
            with open(path, "rb"):
                os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_detached_worker_drops_privileges_to_nobody(shared_dir: Path, redis_url: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing the user needs root")
    import pwd

    nobody = pwd.getpwnam("nobody")
    if not _readable_by(nobody.pw_uid, nobody.pw_gid, os.__file__):
        pytest.skip(f"nobody cannot read this Python's standard library ({os.__file__}): the worker could not run")
    shutil.copy(PROJECT / "tasks.py", shared_dir / "tasks.py")
    (shared_dir / "tasks.py").chmod(0o644)
    project = Project(shared_dir, "redis", redis_url)
    tasks = project.app()
    pidfile, log = shared_dir / "w.pid", shared_dir / "w.log"
    with _detached(project, pidfile, "--logfile", str(log), "--uid", "nobody", "-c", "1") as pid:
        info = tasks.process_info.delay().get(timeout=30)
        assert (info["uid"], info["gid"]) == (nobody.pw_uid, nobody.pw_gid)
        assert Path(f"/proc/{pid}/status").read_text().count(f"\t{nobody.pw_uid}\t") >= 1
        for made in (pidfile, log):  # made before the drop, and given to the new user
            assert (made.stat().st_uid, made.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)
        assert not pidfile.exists()
    project.close()


def test_uid_drops_privileges_after_making_the_files_theirs(shared_dir: Path) -> None:
    """The drop itself, in a process of its own that needs no further imports (whatever the
    interpreter's permissions): user, primary group, no supplementary groups of root, files theirs."""
    if os.geteuid() != 0:
        pytest.skip("changing the user needs root")
    import pwd
    import subprocess

    nobody = pwd.getpwnam("nobody")
    code = (
        "import os, json; from rqueue.worker.daemon import Daemon\n"
        "d = Daemon(logfile='w.log', pidfile='w.pid', uid='nobody', umask='027', workdir=os.environ['WD'])\n"
        "d.enter()\n"
        "made = [(s.st_uid, s.st_gid, s.st_mode & 0o777) for s in map(os.stat, ('w.log', 'w.pid'))]\n"
        "print(json.dumps([os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups(), os.getcwd(), made]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "WD": str(shared_dir)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    import json

    uid, euid, gid, egid, groups, cwd, made = json.loads(done.stdout)
    assert (uid, euid, gid, egid) == (nobody.pw_uid,) * 2 + (nobody.pw_gid,) * 2
    assert 0 not in groups and cwd == str(shared_dir)
    assert made == [[nobody.pw_uid, nobody.pw_gid, 0o640]] * 2  # the log file, the pidfile
    assert not (shared_dir / "w.pid").exists()  # removed at exit, by the new user


def test_gid_alone_changes_only_the_group(project: Project) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing the group needs root")
    import grp

    nogroup = grp.getgrgid(65534)
    tasks = project.app()
    worker = project.start_worker("-c", "1", "--gid", nogroup.gr_name)
    info = tasks.process_info.delay().get(timeout=30)
    assert (info["uid"], info["gid"]) == (0, nogroup.gr_gid)
    assert worker.log.stat().st_gid == nogroup.gr_gid
    worker.stop()

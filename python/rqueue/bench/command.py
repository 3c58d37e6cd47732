"""What ``rqueue bench`` does once its options are parsed: run, print, write; clean up on any exit."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from rqueue.bench.report import pyplot, table, write_json
from rqueue.bench.runner import Bench, BenchOptions

#: Exit code after Ctrl-C or SIGTERM, as a shell reports a SIGINT.
INTERRUPTED_EXIT = 130


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the bench is, so it unwinds and cleans up as for Ctrl-C."""


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run(options: BenchOptions, json_path: str | None, plot_path: str | None, echo: Callable[[str], None]) -> int:
    """Run the bench, print the table, write the files; returns the exit code.

    Workers are stopped and the broker cleaned however the run ends: normally, on an error, or on
    Ctrl-C/SIGTERM (a second Ctrl-C during the clean-up is ignored: it takes a few seconds at most).
    """
    if plot_path:
        pyplot()  # fail before measuring when matplotlib is missing
    # SIGTERM, and SIGHUP (the terminal went away), unwind like Ctrl-C: workers stop, the broker is cleaned.
    handled = [sig for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if sig is not None]
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in handled}
    bench: Bench | None = None
    try:
        bench = Bench(options)
        echo(_banner(bench))
        report = bench.run(on_row=lambda row: echo(_row_line(row)))
        report["cleanup"] = _cleanup(bench, echo)
        echo("")
        echo(table(report["scenarios"]))
        echo(
            "\ndrain: tasks/s from the first task run to the last; latency: per call; CPU: % of one core "
            "(worker processes, and redis-server from INFO cpu); RSS: peak, summed over worker processes"
        )
        if json_path:
            write_json(report, json_path)
            echo(f"wrote {json_path}")
        if plot_path:
            from rqueue.bench.report import plot_bench  # noqa: PLC0415 - matplotlib is optional (rqueue[plot])

            plot_bench(report, plot_path)
            echo(f"wrote {plot_path}")
        return 0
    except KeyboardInterrupt:
        if bench is not None:
            _cleanup(bench, echo, interrupted=True)
        echo("interrupted: workers stopped, the bench's queue and results deleted")
        return INTERRUPTED_EXIT
    finally:
        if bench is not None:
            _cleanup(bench, echo)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cleanup(bench: Bench, echo: Callable[[str], None], interrupted: bool = False) -> dict[str, Any]:
    if bench.cleaned is not None:
        return bench.cleaned
    if interrupted:
        echo("\ninterrupted: stopping workers and cleaning up (a few seconds) ...")
    ignored = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in ignored}
    try:
        return bench.cleanup()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _banner(bench: Bench) -> str:
    o = bench.options
    report = bench.report()
    m = report["machine"]
    where = (
        f"a temporary SQLite file in {bench.tmp} (removed afterwards)"
        if bench.temporary_broker
        else f"{report['broker']} (results: {report['backend']})"
    )
    return (
        f"rqueue bench {report['rqueue']}: {', '.join(o.scenarios)} with {o.tasks:,} tasks on {where}\n"
        f"  queue {bench.queue}; workers: {o.workers} x `{bench.shown_command()}`\n"
        f"  {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {sys.platform}"
    )


def _row_line(row: dict[str, Any]) -> str:
    rate = row.get("tasks_s")
    line = f"  {row['label']}: {row.get('tasks_timed', row['tasks']):,} in {row['seconds']:.2f} s"
    if rate:
        line += f", {rate:,.0f} tasks/s"
    if row.get("p50_ms") is not None:
        line += f", p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms"
    return line

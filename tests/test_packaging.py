"""Packaging and CI plumbing: workflows, the built wheel, the pure-Rust core and the CI entry point.

These tests look at the repository rather than at the library: they keep `.ci/run`, the Makefile,
the GitHub workflows and the wheel honest with one another.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI_WORKFLOW = WORKFLOWS / "ci.yml"
WHEELS_WORKFLOW = WORKFLOWS / "wheels.yml"

OSES = {"ubuntu-latest", "macos-latest", "windows-latest"}
PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]


def _load_workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def _job(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    jobs = workflow.get("jobs", {})
    assert name in jobs, f"job {name!r} missing; jobs are {sorted(jobs)}"
    job = jobs[name]
    assert isinstance(job, dict)
    return job


def _steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job.get("steps", []) if str(step.get("uses", "")).startswith(action + "@")]


def _find_actionlint() -> str | None:
    # The tests run with the venv's interpreter; its bin dir holds actionlint even when the venv is
    # not activated.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("actionlint", path=search)


# -- workflows -----------------------------------------------------------------------------------


def test_workflows_pass_actionlint() -> None:
    actionlint = _find_actionlint()
    if actionlint is None:
        message = "actionlint is not installed (it comes with requirements-dev.txt: run `make venv`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run(
        [actionlint, "-no-color", str(CI_WORKFLOW), str(WHEELS_WORKFLOW)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"actionlint found problems:\n{proc.stdout}{proc.stderr}"


def test_ci_workflow_tests_three_oses_and_python_310_to_314() -> None:
    matrix = _job(_load_workflow(CI_WORKFLOW), "python-tests")["strategy"]["matrix"]
    assert set(matrix["os"]) == OSES
    assert [str(v) for v in matrix["python-version"]] == PYTHONS


def test_ci_workflow_python_tests_have_a_redis_service() -> None:
    job = _job(_load_workflow(CI_WORKFLOW), "python-tests")
    assert "redis" in job.get("services", {}), "python-tests needs a `redis` service on Linux"


def test_ci_workflow_has_lint_and_rust_test_jobs() -> None:
    workflow = _load_workflow(CI_WORKFLOW)
    lint_runs = " ".join(str(step.get("run", "")) for step in _job(workflow, "lint")["steps"])
    assert "make lint" in lint_runs
    rust_runs = " ".join(str(step.get("run", "")) for step in _job(workflow, "rust-tests")["steps"])
    assert "cargo test -p rqueue-core" in rust_runs


def test_wheels_workflow_builds_every_release_target() -> None:
    workflow = _load_workflow(WHEELS_WORKFLOW)
    built: set[tuple[str, str]] = set()
    for job_name, family in (("linux", None), ("macos", "macos"), ("windows", "windows")):
        job = _job(workflow, job_name)
        assert _steps_using(job, "PyO3/maturin-action"), f"job {job_name!r} does not use PyO3/maturin-action"
        for platform in job["strategy"]["matrix"]["platform"]:
            kind = family or ("musllinux" if str(platform["manylinux"]).startswith("musllinux") else "manylinux")
            built.add((kind, str(platform["target"])))
    assert built == {
        ("manylinux", "x86_64"),
        ("manylinux", "aarch64"),
        ("musllinux", "x86_64"),
        ("musllinux", "aarch64"),
        ("macos", "x86_64"),
        ("macos", "aarch64"),
        ("windows", "x64"),
    }


def test_wheels_workflow_builds_an_sdist() -> None:
    steps = _steps_using(_job(_load_workflow(WHEELS_WORKFLOW), "sdist"), "PyO3/maturin-action")
    assert [step["with"]["command"] for step in steps] == ["sdist"]


def test_wheels_workflow_uploads_every_build() -> None:
    workflow = _load_workflow(WHEELS_WORKFLOW)
    for job_name in ("linux", "macos", "windows", "sdist"):
        assert _steps_using(_job(workflow, job_name), "actions/upload-artifact"), f"{job_name!r} uploads nothing"


def test_wheels_workflow_publishes_tags_with_trusted_publishing() -> None:
    publish = _job(_load_workflow(WHEELS_WORKFLOW), "publish")
    assert "refs/tags/" in publish["if"]
    assert set(publish["needs"]) == {"linux", "macos", "windows", "sdist"}
    assert publish["permissions"]["id-token"] == "write"
    assert _steps_using(publish, "pypa/gh-action-pypi-publish")


def test_extension_is_built_as_abi3_py310() -> None:
    cargo_toml = (ROOT / "Cargo.toml").read_text(encoding="utf-8")
    assert re.search(r'^pyo3\s*=.*"abi3-py310"', cargo_toml, flags=re.MULTILINE), "pyo3 must enable abi3-py310"


# -- the built wheel -----------------------------------------------------------------------------


def _built_wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("rqueue-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        pytest.skip("no wheel in dist/: run `make wheel` first (`make test` does)")
    return wheels[-1]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="builds a POSIX PATH (/usr/bin:/bin)")
def test_wheel_installs_and_round_trips_without_a_rust_toolchain(tmp_path: Path) -> None:
    wheel = _built_wheel()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    path = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    assert shutil.which("cargo", path=path) is None, "cargo is on the clean PATH: the check would prove nothing"
    assert shutil.which("rustc", path=path) is None, "rustc is on the clean PATH: the check would prove nothing"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUSTUP", "PYO3", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = path
    python = str(bin_dir / "python")

    # --only-binary: nothing may be compiled; click (a runtime dependency) may come from PyPI.
    install = subprocess.run(
        [python, "-m", "pip", "install", "--only-binary=:all:", "--disable-pip-version-check", str(wheel)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert install.returncode == 0, f"pip install {wheel.name} failed:\n{install.stdout}{install.stderr}"

    snippet = textwrap.dedent(
        """
        import rqueue
        from rqueue import _rqueue
        assert _rqueue.loads(_rqueue.dumps({"a": [1, 2]})) == {"a": [1, 2]}
        print(_rqueue.__file__)
        """
    )
    run = subprocess.run(
        [python, "-I", "-c", snippet],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"round trip through the installed extension failed:\n{run.stdout}{run.stderr}"
    assert Path(run.stdout.strip()).resolve().is_relative_to(venv.resolve()), (
        f"rqueue._rqueue was imported from {run.stdout.strip()}, not from the fresh venv"
    )


# -- the pure-Rust core --------------------------------------------------------------------------


def test_core_crate_does_not_depend_on_pyo3() -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed")
    proc = subprocess.run(
        [cargo, "tree", "-p", "rqueue-core", "-e", "normal"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"cargo tree failed:\n{proc.stderr}"
    assert "pyo3" not in proc.stdout.lower(), f"rqueue-core must stay pure Rust, but depends on pyo3:\n{proc.stdout}"


# -- the CI entry point --------------------------------------------------------------------------


def _ci_command() -> str:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    commands = [line.removeprefix("exec ").strip() for line in lines if line.startswith("exec ")]
    assert len(commands) == 1, f".ci/run should end in one `exec COMMAND`, found {commands}"
    return commands[0]


def test_ci_run_calls_make_test() -> None:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert _ci_command() == "make test"


def test_readme_names_the_ci_command() -> None:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet")
    assert _ci_command() in readme.read_text(encoding="utf-8"), "README.md should tell how to run the tests"


def test_makefile_help_lists_the_targets() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    proc = subprocess.run([make, "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ") and line.strip()}
    expected = {"venv", "wheel", "install", "redis", "lint", "test-rust", "test-python", "test", "demo", "bench"}
    assert expected <= listed, f"missing from `make help`: {sorted(expected - listed)}"

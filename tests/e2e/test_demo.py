"""The README's first command: ``python -m workflow_engine.demo`` on a machine with no settings
(SQLite and the embedded broker), through real celery worker and beat processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import REPO_ROOT, clean_environment
from workflow_engine.examples.document_processing import document_processing

pytestmark = pytest.mark.e2e


def processes_in(folder: Path) -> list[int]:
    """Live processes whose working directory is ``folder`` (the demo's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_the_readme_first_command_runs_the_demo_end_to_end(tmp_path):
    env = clean_environment()  # no WORKFLOW_ENGINE_* / CELERY_* settings at all
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "workflow_engine.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "sqlite:///" in output and "embedded" in output, output
    assert "final output:" in output, output

    # The last status printed for every stage of the workflow is COMPLETED.
    names = [stage.name for group in document_processing.get_execution_plan() for stage in group]
    assert len(names) >= 4
    for name in names:
        lines = [line for line in result.stdout.splitlines() if f" {name} " in f"{line} "]
        assert lines, f"no progress line for stage {name!r}\n{output}"
        assert lines[-1].split()[-1] == "COMPLETED", f"{name}: {lines[-1]}\n{output}"
    assert any("SUSPENDED" in line for line in result.stdout.splitlines()), (
        "the async-batch stage should be seen suspended"
    )
    final = result.stdout.split("final output:", 1)[1]
    for key in ("title", "summary", "keywords", "category"):
        assert key in final, output
    # Everything it wrote is under the working directory, and its processes are gone.
    assert (tmp_path / ".workflow_engine" / "demo" / "state.db").exists()
    assert processes_in(tmp_path) == []

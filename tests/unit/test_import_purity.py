"""Importing the core loads no infrastructure library (contract §2)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("celery", "kombu", "redis", "sqlalchemy", "psycopg", "flask", "django")


def loaded_after(statement: str) -> list[str]:
    """Top-level packages among HEAVY that a fresh interpreter has loaded after ``statement``."""
    script = textwrap.dedent(
        f"""
        import json, sys
        {statement}
        heavy = {HEAVY!r}
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_core_packages_load_no_infrastructure_library() -> None:
    statement = (
        "import workflow_engine, workflow_engine.kernel, workflow_engine.testing, "
        "workflow_engine.hosts.serverless"
    )
    assert loaded_after(statement) == []


def test_the_rest_of_the_core_loads_no_infrastructure_library() -> None:
    # importing several modules at once loads a superset of what each loads alone
    statement = (
        "import workflow_engine.kernel.commands, workflow_engine.hosts.support, "
        "workflow_engine.plugins, workflow_engine.definitions, workflow_engine.records"
    )
    assert loaded_after(statement) == []


def test_using_the_core_end_to_end_loads_no_infrastructure_library() -> None:
    statement = textwrap.dedent(
        """
        from pydantic import BaseModel
        from workflow_engine import WorkflowBuilder, define_stage
        from workflow_engine.testing import WorkflowTestHarness

        class In(BaseModel):
            text: str

        stage = define_stage(id="s", name="S", input=In, output=In, execute=lambda c: c.input)
        wf = WorkflowBuilder("wf", "Wf", input=In, output=In).pipe(stage).build()
        run = WorkflowTestHarness(wf).run("wf", {"text": "x"})
        assert run.status == "COMPLETED", run.status
        """
    ).replace("\n", "\n        ")
    assert loaded_after(statement) == []


def test_the_probe_does_detect_a_heavy_import() -> None:
    assert loaded_after("import sqlalchemy") == ["sqlalchemy"]

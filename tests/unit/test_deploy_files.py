"""deploy/: every file parses, and every command it names exists in this project.

Commands are checked by parsing them with the real command-line parsers, without running
them: ``celery -A MODULE <command> ...`` (MODULE must be a module of this repository defining
a Celery ``app``; the options must be valid for Celery's ``worker``/``beat``/``inspect``),
``workflow-engine <group> <command> ...`` (our click CLI), ``gunicorn MODULE:factory()`` and
``sh -c "..."`` (checked recursively). Images that are not ours (postgres, redis, flower) are
only checked to parse.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery import Celery
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli

from workflow_engine.cli.main import cli as engine_cli

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
UNIT_FILES = sorted(DEPLOY.glob("systemd/*.service"))
EXTERNAL_TOOLS = {"python", "pg_isready", "redis-cli", "redis-server"}


# -- checking one command ---------------------------------------------------------------------
def module_defines(module: str, attribute: str) -> bool:
    """Whether ``module`` (importable from the repository root) assigns or defines ``attribute``,
    read from its source (importing it would build apps and connect to things)."""
    path = REPO / Path(*module.split(".")).with_suffix(".py")
    if not path.exists():
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"no module {module}"
        path = Path(spec.origin)
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return attribute in names


def check_celery(argv: list[str]) -> str:
    args = argv[1:]
    app_module = None
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("-A", "--app"):
            app_module = args.pop(0)
        elif option.startswith("--app="):
            app_module = option.split("=", 1)[1]
        elif not option.startswith("--broker="):
            raise AssertionError(f"unexpected celery option {option} in {argv}")
    assert app_module is not None, f"celery without -A: {argv}"
    assert module_defines(app_module, "app"), f"{app_module} defines no Celery `app`"
    ctx = click.Context(
        celery_cli, info_name="celery", obj=CLIContext(Celery("probe"), True, None, True)
    )
    name = args[0]
    command = celery_cli.get_command(ctx, name)
    assert command is not None, f"celery has no {name!r} command: {argv}"
    command.make_context(name, args[1:], parent=ctx)  # raises UsageError on a bad option
    return f"celery {name}"


def split_at_command(group: click.Group, args: list[str]) -> tuple[list[str], str, list[str]]:
    """``[group options...], command name, [the rest]``."""
    takes_value = {
        name
        for param in group.params
        if isinstance(param, click.Option) and not param.is_flag
        for name in param.opts
    }
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in takes_value else 1
    assert i < len(args), f"{group.name} needs a command: {args}"
    return args[:i], args[i], args[i + 1 :]


def check_engine_cli(argv: list[str]) -> str:
    command: click.Command = engine_cli
    ctx: click.Context | None = None
    path: list[str] = []
    args = argv[1:]
    while isinstance(command, click.Group):
        options, name, args = split_at_command(command, args)
        ctx = command.make_context(
            path[-1] if path else "workflow-engine", [*options, name], parent=ctx
        )
        found = command.get_command(ctx, name)
        assert found is not None, f"workflow-engine has no command {' '.join([*path, name])}"
        path.append(name)
        command = found
    command.make_context(path[-1], args, parent=ctx)  # raises UsageError on a bad option
    return "workflow-engine " + " ".join(path)


def check_wsgi_target(target: str) -> str:
    module, _, attribute = target.partition(":")
    attribute = attribute.removesuffix("()")
    assert module_defines(module, attribute), f"{module} has no {attribute}"
    return f"wsgi {target}"


def check_command(argv: list[str]) -> Iterator[str]:
    """Yield what was checked; fail on a command or option that does not exist."""
    name = Path(argv[0]).name
    if name == "sh" and argv[1] == "-c":
        yield from check_command(shlex.split(argv[2]))
    elif name == "celery":
        yield check_celery(argv)
    elif name == "workflow-engine":
        yield check_engine_cli(argv)
    elif name == "gunicorn":
        targets = [arg for arg in argv[1:] if not arg.startswith("-")]
        assert len(targets) == 1, argv
        yield check_wsgi_target(targets[0])
    elif name in EXTERNAL_TOOLS:
        yield f"external {name}"
    else:
        raise AssertionError(f"unknown command {name!r} in {argv}")


# -- where the commands are -----------------------------------------------------------------------
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def ours(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("workflow-engine")


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def compose_commands() -> Iterator[tuple[str, list[str]]]:
    for name, service in compose()["services"].items():
        if not ours(service):
            continue
        yield f"compose {name}", as_argv(service["command"])
        test = service.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD-SHELL":
            yield f"compose {name} healthcheck", ["sh", "-c", test[1]]


def kubernetes_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(DEPLOY.glob("kubernetes/*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            yield path, document


def kubernetes_commands() -> Iterator[tuple[str, list[str]]]:
    for path, document in kubernetes_documents():
        spec = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            where = f"{path.name} {container['name']}"
            yield where, [*container["command"], *container.get("args", [])]
            probe = container.get("livenessProbe", {}).get("exec")
            if probe:
                yield f"{where} livenessProbe", probe["command"]


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


SYSTEMD_SPECIFIERS = {"i": "1", "I": "1", "H": "host1", "n": "unit@1.service", "%": "%"}


def systemd_expand(line: str) -> str:
    """What systemd passes on after replacing its ``%`` specifiers (``%i``: the instance)."""
    return re.sub(r"%(.)", lambda m: SYSTEMD_SPECIFIERS[m.group(1)], line)


def systemd_commands() -> Iterator[tuple[str, list[str]]]:
    for path in UNIT_FILES:
        yield path.name, shlex.split(systemd_expand(unit(path)["Service"]["ExecStart"]))


def dockerfile_commands() -> Iterator[tuple[str, list[str]]]:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            yield "Dockerfile CMD", json.loads(line[4:])


ALL_COMMANDS = [
    *compose_commands(),
    *kubernetes_commands(),
    *systemd_commands(),
    *dockerfile_commands(),
]


# -- tests ----------------------------------------------------------------------------------------
def test_the_deploy_folder_has_every_piece() -> None:
    names = {path.relative_to(DEPLOY).as_posix() for path in DEPLOY.rglob("*") if path.is_file()}
    assert {"README.md", "Dockerfile", "docker-compose.yml"} <= names
    assert any(name.startswith("kubernetes/") for name in names)
    assert any(name.startswith("systemd/") for name in names)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_every_systemd_unit_parses(path: Path) -> None:
    parsed = unit(path)
    assert {"Unit", "Service", "Install"} <= set(parsed.sections())
    assert parsed["Unit"]["Description"]
    service = parsed["Service"]
    assert service["ExecStart"].startswith("/")  # systemd wants an absolute path
    assert service["EnvironmentFile"] == "/etc/workflow-engine/env"
    if service.get("Type") != "oneshot":
        assert service["Restart"] == "always" and service["KillSignal"] == "SIGTERM"
    for line in (DEPLOY / "systemd" / "workflow-engine.env").read_text().splitlines():
        assert not line or line.startswith("#") or re.fullmatch(r"WORKFLOW_ENGINE_\w+=\S+", line)


@pytest.mark.parametrize("where,argv", ALL_COMMANDS, ids=[w for w, _ in ALL_COMMANDS])
def test_every_command_exists_in_the_project(where: str, argv: list[str]) -> None:
    checked = list(check_command(argv))
    assert checked, where


def test_the_commands_cover_migrate_worker_beat_and_the_web_app() -> None:
    checked = {what for _, argv in ALL_COMMANDS for what in check_command(argv)}
    assert {
        "celery worker",
        "celery beat",
        "celery inspect",
        "workflow-engine db upgrade",
        "wsgi examples.flask_app.app:create_app()",
    } <= checked


def test_compose_runs_every_role_in_order() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "worker", "beat", "flower", "web"} <= set(services)
    for role in ("worker", "beat", "web"):
        needs = services[role]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", role
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "noeviction" in services["redis"]["command"]
    assert services["worker"]["stop_signal"] == "SIGTERM"
    dockerfile = services["worker"]["build"]["dockerfile"]
    assert (REPO / dockerfile).exists()


def test_kubernetes_has_a_graceful_worker_a_single_beat_and_a_migrate_job() -> None:
    by_component = {
        (doc["kind"], doc["metadata"]["labels"].get("app.kubernetes.io/component")): doc
        for _, doc in kubernetes_documents()
    }
    worker = by_component[("Deployment", "worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] >= 60
    assert "exec" in worker["containers"][0]["livenessProbe"]
    beat = by_component[("Deployment", "beat")]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    job = by_component[("Job", "migrate")]["spec"]["template"]["spec"]
    assert job["containers"][0]["command"] == ["workflow-engine", "db", "upgrade"]
    for kind in ("Deployment", "Job"):
        for (found, _), doc in by_component.items():
            if found == kind:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    refs = {
                        ref.get("configMapRef", ref.get("secretRef", {})).get("name")
                        for ref in container["envFrom"]
                    }
                    assert refs == {"workflow-engine"}


def test_a_wrong_command_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="no command"):
        list(check_command(["workflow-engine", "runs", "purge"]))
    with pytest.raises(click.UsageError):
        list(check_command(["celery", "-A", "celery_app", "worker", "--no-such-option"]))
    with pytest.raises(AssertionError, match="defines no Celery"):
        list(check_command(["celery", "-A", "beat_schedule", "worker"]))

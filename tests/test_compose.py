"""Checks that docker-compose.yml and the Dockerfile wire Kindred to MongoDB as users rely on."""

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MONGO_DEFAULT_PORT = 27017


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _service(name: str) -> dict[str, Any]:
    services = _compose()["services"]
    assert name in services, f"no {name!r} service in docker-compose.yml"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _args(value: str | list[str]) -> list[str]:
    """A compose command or healthcheck test as a list of arguments."""
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _healthcheck_text(service: dict[str, Any]) -> str:
    healthcheck = service.get("healthcheck")
    assert isinstance(healthcheck, dict), "service has no healthcheck"
    assert not healthcheck.get("disable", False)
    test = _args(healthcheck["test"])
    assert test[0] in {"CMD", "CMD-SHELL"}, test
    return " ".join(test[1:])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _option(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in args."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _replica_set_name() -> str:
    name = _option(_args(_service("mongo")["command"]), "--replSet")
    assert name, "mongo does not run with --replSet"
    return name


def _mongo_port() -> int:
    port = _option(_args(_service("mongo")["command"]), "--port")
    return int(port) if port else MONGO_DEFAULT_PORT


def _dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), by stage."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        instructions.append(current + line)
        current = ""
    stages: list[list[str]] = []
    for instruction in instructions:
        if instruction.split(maxsplit=1)[0].upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _keyword(instruction: str) -> str:
    return instruction.split(maxsplit=1)[0].upper()


def _final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in _dockerfile_stages()[-1]:
        if _keyword(instruction) == "ENV":
            for pair in shlex.split(instruction.split(maxsplit=1)[1]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_mongo_is_a_recent_replica_set_member() -> None:
    mongo = _service("mongo")
    image, _, tag = str(mongo["image"]).partition(":")
    assert image == "mongo"
    major = re.match(r"\d+", tag)
    assert major, f"mongo image tag {tag!r} has no major version"
    assert int(major.group()) >= 7
    assert _replica_set_name() == "rs0"
    assert "--bind_ip_all" in _args(mongo["command"])


def test_mongo_healthcheck_initiates_the_same_replica_set() -> None:
    check = _healthcheck_text(_service("mongo"))
    assert "rs.initiate(" in check
    ids = re.findall(r"_id:\s*['\"]([^'\"]+)['\"]", check)
    assert ids == [_replica_set_name()]
    hosts = re.findall(r"host:\s*['\"]([^'\"]+)['\"]", check)
    assert hosts == [f"mongo:{_mongo_port()}"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_reach_mongo_by_service_name_and_replica_set(name: str) -> None:
    uri = urlsplit(_environment(_service(name))["KINDRED_MONGODB_URI"])
    assert uri.scheme == "mongodb"
    assert uri.hostname == "mongo"
    assert uri.hostname in _compose()["services"]
    assert (uri.port or MONGO_DEFAULT_PORT) == _mongo_port() == MONGO_DEFAULT_PORT
    assert parse_qs(uri.query).get("replicaSet") == [_replica_set_name()]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_wait_for_a_healthy_mongo(name: str) -> None:
    depends_on = _service(name)["depends_on"]
    assert isinstance(depends_on, dict), "depends_on needs the long form to set a condition"
    assert depends_on["mongo"]["condition"] == "service_healthy"


def test_api_healthcheck_uses_readiness() -> None:
    check = _healthcheck_text(_service("api"))
    assert re.search(r"http://(127\.0\.0\.1|localhost):8000/readyz\b", check)


def test_api_builds_from_the_repo_dockerfile() -> None:
    build = _service("api")["build"]
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE


def test_named_volumes_are_declared() -> None:
    compose = _compose()
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source = volume.get("source", "") if volume.get("type") == "volume" else ""
            else:
                source = str(volume).split(":", 1)[0] if ":" in str(volume) else ""
            if source and not source.startswith((".", "/", "~", "$")):
                used.add(source)
    assert used, "no service uses a named volume"
    assert used <= declared, f"undeclared volumes: {used - declared}"


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    users = [i.split(maxsplit=1)[1] for i in stages[-1] if _keyword(i) == "USER"]
    assert users, "final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_leaves_out_the_embedded_database() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "[embedded]" not in text
    assert "secantus" not in text.lower()


def test_dockerfile_runs_kindred_serve() -> None:
    final = _dockerfile_stages()[-1]
    argv: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):
        found = [i.split(maxsplit=1)[1] for i in final if _keyword(i) == keyword]
        if found:
            form = found[-1]
            argv += json.loads(form) if form.startswith("[") else shlex.split(form)
    assert argv[:2] == ["kindred", "serve"]


def test_api_publishes_the_port_kindred_listens_on() -> None:
    env = _final_env()
    assert env.get("KINDRED_HOST") == "0.0.0.0"
    port = env.get("KINDRED_PORT")
    assert port == "8000"
    assert _environment(_service("api")).get("KINDRED_PORT", port) == port
    published = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in _service("api")["ports"]]
    assert port in published


def test_worker_runs_the_profile_builder_from_the_same_image() -> None:
    worker = _service("worker")
    assert worker["command"] == ["kindred", "worker"]
    assert worker["build"] == _service("api")["build"]
    assert (
        _environment(worker)["KINDRED_DATABASE"]
        == _environment(_service("api"))["KINDRED_DATABASE"]
    )

"""The service packaging, checked statically: no Docker engine or running systemd is needed.

Dockerfile, docker-compose.yml and deploy/embed-worker.service must agree with each other and
with the worker: its settings, its grace period, its health routes. `systemd-analyze verify`
runs on the unit when the machine has it.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "embed-worker.service"

# What shutdown may take after EMBED_GRACE_SECONDS (worker/process/runner.py): handing jobs back (3 s
# connect + 3 s statement timeout) and joining the four pipeline threads (2 s each).
SHUTDOWN_STEPS_SECONDS = 14


# --- helpers ----------------------------------------------------------------------------------
def seconds(duration: str) -> float:
    """'45s', '1m30s', '2min', '500ms', '45' (seconds) -> seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", duration.strip())
    assert parts, f"not a duration: {duration!r}"
    return sum(float(n) * units[u or "s"] for n, u in parts)


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions as (KEYWORD, arguments), continuation lines joined, grouped by stage."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[tuple[str, str]]] = [[]]  # stage 0: ARGs before the first FROM
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), " ".join(args.split())))
    return stages


def image_env(stages: list[list[tuple[str, str]]]) -> dict[str, str]:
    """The final stage's ENV (KEY=value form only)."""
    pairs = (arg.split("=", 1) for kw, a in stages[-1] if kw == "ENV" for arg in a.split())
    return {key: value for key, value in pairs}


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd's INI dialect: sections of (key, value), keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        assert current is not None, f"{line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def one(entries: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in entries if k == key]
    assert len(values) == 1, f"{key}: expected one value, got {values}"
    return values[0]


def python_check(test: list[str]) -> str:
    """The code of a health check that runs `python -c CODE`; it must at least compile."""
    assert test[:3] == ["CMD", "python", "-c"], test
    compile(test[3], "<healthcheck>", "exec")
    return test[3]


def settings_variables() -> list[str]:
    return [f.metadata["env"] for f in fields(Settings)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


# --- docker-compose.yml -----------------------------------------------------------------------
def test_compose_has_db_migrate_and_worker(services: dict[str, Any]) -> None:
    assert set(services) == {"db", "migrate", "worker"}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["worker"]["command"] == ["run"]
    # Both run the image built from the top-level Dockerfile.
    for name in ("migrate", "worker"):
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"] == services["worker"]["image"]


def test_compose_start_order(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["worker"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["migrate"]["restart"] == "no"
    assert services["worker"]["restart"] in ("on-failure", "unless-stopped")


def test_compose_health_checks(services: dict[str, Any]) -> None:
    db_check = services["db"]["healthcheck"]["test"]
    # TCP: the entrypoint's temporary init server listens on the socket only.
    assert db_check[:2] == ["CMD", "pg_isready"] and "-h" in db_check
    code = python_check(services["worker"]["healthcheck"]["test"])
    assert "/readyz" in code
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_compose_configures_the_worker_from_an_env_file(services: dict[str, Any]) -> None:
    for name in ("migrate", "worker"):
        paths = [e["path"] if isinstance(e, dict) else e for e in services[name]["env_file"]]
        assert paths == ["embed-worker.env"]
    assert (ROOT / "embed-worker.env.example").is_file()
    assert "embed-worker.env" in (ROOT / ".gitignore").read_text().split()


def test_compose_database_settings_agree(services: dict[str, Any]) -> None:
    db_env = services["db"]["environment"]
    for name in ("migrate", "worker"):
        env = services[name]["environment"]
        assert env["PGHOST"] == "db"
        assert env["PGDATABASE"] == db_env["POSTGRES_DB"]
        assert env["PGPASSWORD"] == db_env["POSTGRES_PASSWORD"]
    command = services["db"]["command"]
    assert "shared_preload_libraries=pg_cron" in command
    assert f"cron.database_name={db_env['POSTGRES_DB']}" in command


def test_compose_stop_grace_covers_the_workers_grace(services: dict[str, Any]) -> None:
    grace = Settings().grace_seconds
    stop = seconds(services["worker"]["stop_grace_period"])
    assert stop >= grace + SHUTDOWN_STEPS_SECONDS
    assert stop == seconds(one(unit_file(UNIT)["Service"], "TimeoutStopSec"))


def test_compose_publishes_the_images_http_port(services: dict[str, Any]) -> None:
    env = image_env(dockerfile_stages(ROOT / "Dockerfile"))
    (mapping,) = services["worker"]["ports"]
    assert mapping.startswith("127.0.0.1:")
    assert mapping.rsplit(":", 1)[1] == env["EMBED_HTTP_PORT"]


# --- Dockerfile -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return dockerfile_stages(ROOT / "Dockerfile")


def test_dockerfile_is_multi_stage_on_slim_python(stages: list[list[tuple[str, str]]]) -> None:
    froms = [args for stage in stages for kw, args in stage if kw == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in [f"{k} {a}" for k, a in stages[0]]
    build, runtime = stages[1], stages[2]
    # The build stage installs into a virtual environment and removes pip from it...
    (install,) = [a for k, a in build if k == "RUN" and "pip install" in a]
    assert "venv /opt/embed-worker" in install and "pip uninstall -y pip setuptools" in install
    # ...which the runtime copies as it is, installing nothing: no pip, no compiler, no apt.
    assert ("COPY", "--from=build /opt/embed-worker /opt/embed-worker") in runtime
    assert not any(k == "RUN" and re.search(r"pip|apt|gcc|build-essential", a) for k, a in runtime)
    # The classic builder (no BuildKit) builds it: no RUN --mount, no syntax directive.
    text = (ROOT / "Dockerfile").read_text()
    assert "--mount" not in text and "# syntax=" not in text


def test_dockerfile_runs_as_a_non_root_user(stages: list[list[tuple[str, str]]]) -> None:
    users = [args for kw, args in stages[-1] if kw == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")


def test_dockerfile_entrypoint_health_and_environment(
    stages: list[list[tuple[str, str]]],
) -> None:
    runtime = dict(stages[-1])  # the last of each keyword
    assert json.loads(runtime["ENTRYPOINT"]) == ["embed-worker"]
    assert json.loads(runtime["CMD"]) == ["run"]
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    command = runtime["HEALTHCHECK"].partition(" CMD ")[2]
    assert "/healthz" in python_check(["CMD", *json.loads(command)])
    env = image_env(stages)
    assert env["EMBED_HTTP_HOST"] == "0.0.0.0"  # a container's loopback is unreachable
    assert env["EMBED_HTTP_PORT"] == "8080"
    assert env["EMBED_CACHE_DIR"].startswith("/")
    assert ("EXPOSE", env["EMBED_HTTP_PORT"]) in stages[-1]


def test_dockerfile_bakes_the_model_unless_told_not_to(
    stages: list[list[tuple[str, str]]],
) -> None:
    runtime = stages[-1]
    assert ("ARG", "BAKE_MODEL=true") in runtime
    (bake,) = [a for k, a in runtime if k == "RUN" and "model download" in a]
    assert '"${BAKE_MODEL}" = "true"' in bake
    # Downloaded as the runtime user, so the cache is its own.
    assert runtime.index(("RUN", bake)) > max(i for i, (k, _) in enumerate(runtime) if k == "USER")


def test_the_image_installs_the_wheel_make_dist_builds(
    stages: list[list[tuple[str, str]]],
) -> None:
    """The context is dist/'s wheels and nothing else: the image holds the wheel that was built
    (and tested) by `make dist`, never the source tree."""
    ignore = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore == ["*", "!dist/*.whl"]  # .venv, .devdb, caches, sources never enter it
    build = stages[1]
    copied = [args for kw, args in build if kw == "COPY"]
    assert copied == ["dist/ /tmp/dist/"]
    (install,) = [a for k, a in build if k == "RUN" and "pip install" in a]
    assert "/tmp/dist/embed_worker-*-py3-none-any.whl" in install
    assert "make dist" in install  # what to run when dist/ holds no wheel
    make = (ROOT / "Makefile").read_text()
    assert "-m build --no-isolation --outdir dist ." in make


def test_the_console_script_and_the_pinned_python_api_import() -> None:
    """`embed-worker` and `from worker.embedder import Embedder` are pinned (DESIGN.md): the
    package layout may move code, never these two."""
    import importlib

    from worker.embedder import Embedder
    from worker.models.embedder import Embedder as Defined

    assert issubclass(Embedder, Defined)  # with the environment's location by default
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, function = pyproject["project"]["scripts"]["embed-worker"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_postgres_image_has_the_extensions(services: dict[str, Any]) -> None:
    build = services["db"]["build"]
    text = (ROOT / build["context"] / "Dockerfile").read_text()
    assert "FROM postgres:${PG_MAJOR}-bookworm" in text
    for package in ("postgresql-${PG_MAJOR}-pgvector", "postgresql-${PG_MAJOR}-cron"):
        assert package in text
    assert "pgmq.control" in text
    assert re.search(r"^ARG PG_MAJOR=(\d+)$", text, re.M)


# --- deploy/embed-worker.service --------------------------------------------------------------
def test_unit_file_runs_the_worker_as_a_hardened_service() -> None:
    unit = unit_file(UNIT)
    service = unit["Service"]
    assert one(service, "ExecStart").endswith("/embed-worker run")
    assert one(service, "ExecStart").startswith("/")
    # The worker sends READY=1 (worker/process/systemd.py), and start-up may wait for the database.
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "TimeoutStartSec") == "infinity"
    assert one(service, "EnvironmentFile") == "/etc/embed-worker/embed-worker.env"
    assert one(service, "Restart") == "on-failure"
    assert seconds(one(service, "RestartSec")) > 0
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "CacheDirectory") == "embed-worker"
    environment = [v for k, v in service if k == "Environment"]
    assert "EMBED_CACHE_DIR=%C/embed-worker" in environment
    required = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
    }
    assert {k: one(service, k) for k in required} == required
    filters = [v for k, v in service if k == "SystemCallFilter"]
    assert filters[:1] == ["@system-service"]  # an allow list first; exclusions may follow
    assert one(service, "DynamicUser") == "yes" or any(k == "User" for k, _ in service)
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_unit_stop_timeout_covers_the_workers_grace() -> None:
    timeout = seconds(one(unit_file(UNIT)["Service"], "TimeoutStopSec"))
    assert timeout >= Settings().grace_seconds + SHUTDOWN_STEPS_SECONDS


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd provides it)")
    # verify insists that ExecStart exists: point it at this environment's embed-worker.
    command = shutil.which("embed-worker") or str(Path(sys.executable).parent / "embed-worker")
    if not Path(command).is_file():
        pytest.skip("no installed embed-worker command to stand in for /usr/local/bin")
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={command}", UNIT.read_text())
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, check=False
    )
    # verify exits 0 even for unknown keys and bad values; those show up as messages.
    messages = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not messages, result.stdout + result.stderr


# --- documentation of the settings ------------------------------------------------------------
def test_every_setting_is_in_the_env_example() -> None:
    example = (ROOT / "embed-worker.env.example").read_text()
    missing = [v for v in settings_variables() if not re.search(rf"(?m)^#?{v}=", example)]
    assert not missing, f"add to embed-worker.env.example: {missing}"


def test_the_env_example_shows_defaults_or_says_it_is_an_example() -> None:
    """Its header says the value shown is the default: a value that is not (a URL, a port the
    image sets) says so on the comment line above it."""
    lines = (ROOT / "embed-worker.env.example").read_text().splitlines()
    default = Settings.from_env({})
    unmarked = [
        line
        for above, line in itertools.pairwise(lines)
        if (m := re.fullmatch(r"#([A-Z_]+)=(.+)", line))
        and m.group(1) in settings_variables()
        and Settings.from_env({m.group(1): m.group(2)}) != default
        and "(an example: " not in above
    ]
    assert unmarked == []


def test_every_setting_is_in_the_operating_table() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"(?m)^\| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \|", doc)
    documented = {name.strip("`") for row in rows for name in row.split(", ")}
    expected = set(settings_variables()) | {"EMBED_MODEL_PATH", "EMBED_CACHE_DIR", "DEVDB_PORT"}
    assert not expected - documented, f"add to docs/configuration.md: {expected - documented}"


# --- the release ------------------------------------------------------------------------------
def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_embed_worker_version_is_the_package_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "worker", "--version"], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == f"embed-worker {project_version()}"


def test_the_changelog_leads_with_this_version() -> None:
    """Keep a Changelog: `## [VERSION] - DATE` (or Unreleased) per release, newest first, each
    with groups from the standard set."""
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2}|Unreleased)$", text, re.M)
    assert releases, "no release headings"
    assert releases[0][0] == project_version()
    assert [v for v, _ in releases] == sorted(
        (v for v, _ in releases), key=lambda v: tuple(map(int, v.split("."))), reverse=True
    )
    groups = set(re.findall(r"^### (.+)$", text, re.M))
    notes = {g for g in groups if re.fullmatch(r"Upgrade notes \(from \d+\.\d+\.\d+\)", g)}
    assert groups - notes <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_artifacts_named_in_docs_and_manifests_are_this_version() -> None:
    """Image tags and wheel names in the docs, the Dockerfile and the manifests name the
    version a checkout builds (`make dist`), never an older one."""
    named = re.compile(r"embed[-_]worker[-:_](\d+\.\d+\.\d+)")
    files = [ROOT / "README.md", ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    files += [*(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("*.y*ml")]
    stale = {
        f"{path.relative_to(ROOT)}: {found}"
        for path in files
        for found in named.findall(path.read_text())
        if found != project_version()
    }
    assert stale == set()
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
    assert [i["newTag"] for i in kustomization["images"]] == [project_version()]


def _headings(markdown: Path) -> set[str]:
    return {
        line.lstrip("#").strip()
        for line in markdown.read_text().splitlines()
        if line.startswith("#")
    }


def test_pointers_in_the_operating_files_name_sections_that_exist() -> None:
    """`(docs/x.md, "Heading")` in the deploy files, the compose file and the env example: the
    unit once sent people to README sections that had moved to docs/operating.md."""
    files = [
        *ROOT.joinpath("deploy").rglob("*"),
        ROOT / "docker-compose.yml",
        ROOT / "embed-worker.env.example",
    ]
    pointers = [
        (path, doc, heading)
        for path in files
        if path.is_file()
        for doc, heading in re.findall(r"([\w/]+\.md),? \(?\"([^\"]+)\"", path.read_text())
    ]
    assert pointers, "no pointer found: the pattern no longer matches how the files cite docs"
    missing = [(p.name, d, h) for p, d, h in pointers if h not in _headings(ROOT / d)]
    assert missing == []


def test_the_operating_steps_need_no_checkout() -> None:
    """The systemd steps and the unit's own header install what the package prints
    (`embed-worker deploy`), not files from a checkout, and no `pip install embed-worker`
    that no index serves; the models live outside the virtual environment."""
    operating = (ROOT / "docs" / "operating.md").read_text()
    systemd = operating.split("## Running with systemd", 1)[1].split("\n## ", 1)[0]
    for text in (systemd, UNIT.read_text()):
        assert (
            "install -m 0644 deploy/" not in text and "install -m 0600 embed-worker.env" not in text
        )
        assert "pip install embed-worker" not in text
        assert "embed-worker deploy systemd > /etc/systemd/system/embed-worker.service" in text
    assert "/opt/embed-worker/models" not in systemd
    assert "EMBED_MODEL_PATH=/usr/local/share/embed-worker/models" in systemd


def test_deploy_prints_each_file_from_the_checkout() -> None:
    from worker.cli.deploy import FILES

    for name, (_, path) in FILES.items():
        printed = subprocess.run(
            [sys.executable, "-m", "worker", "deploy", name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == (ROOT / path).read_text()

"""`embed-worker deploy FILE`: the operating files an install needs, printed from the package;
`embed-worker deploy kubernetes DIR`: the Kubernetes kustomization, written into DIR.

An installed wheel has no checkout beside it, yet docs/operating.md's systemd steps install a
unit file and an env file, and its monitoring section loads alert rules and a dashboard. The
wheel carries them (pyproject.toml force-includes them under worker/_deploy); in a checkout they
are read from where they are edited (deploy/, the env example at the top).
"""

from __future__ import annotations

import sys
from pathlib import Path

from worker import exceptions
from worker.schema.files import bundled_or_checkout

# name -> (what it is, its path in a checkout; in the wheel it is worker/_deploy/<basename>)
FILES: dict[str, tuple[str, str]] = {
    "systemd": ("the systemd unit", "deploy/embed-worker.service"),
    "env": ("every setting, commented, for an env file", "embed-worker.env.example"),
    "alerts": ("Prometheus alerting rules", "deploy/prometheus/alerts.yml"),
    "dashboard": ("a Grafana dashboard", "deploy/grafana/embed-worker.json"),
}


# The kustomization (several files, so written into a directory rather than printed).
KUSTOMIZATION = "deploy/kubernetes"
DIRECTORIES: dict[str, tuple[str, str]] = {
    "kubernetes": (
        "the Kubernetes kustomization (Deployment, KEDA ScaledObject), into DIR",
        KUSTOMIZATION,
    )
}


def path_of(name: str) -> Path:
    checkout = FILES[name][1]
    return bundled_or_checkout(f"_deploy/{Path(checkout).name}", checkout)


def print_file(name: str) -> int:
    sys.stdout.write(path_of(name).read_text())
    return 0


def kustomization_files() -> dict[str, str]:
    """The kustomization's files by name, as this version ships them."""
    directory = bundled_or_checkout("_deploy/kubernetes", KUSTOMIZATION)
    return {p.name: p.read_text() for p in sorted(directory.iterdir()) if p.suffix == ".yaml"}


def write_kustomization(into: Path) -> int:
    """Writes the kustomization into `into` (made if missing); refuses to replace a file that is
    there, so a kustomization someone edited is never overwritten. Then `kubectl apply -k`."""
    files = kustomization_files()
    try:
        into.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # DIR, or a folder on its way, is a file
        raise exceptions.ConfigError(
            f"`embed-worker deploy kubernetes {into}`: {into} is not a directory (a file is in"
            " its place): name a directory, new or existing"
        ) from None
    except OSError as exc:
        raise exceptions.EmbedWorkerError(f"cannot make the directory {into}: {exc}") from None
    there = [name for name in files if (into / name).exists()]
    if there:
        print(
            f"embed-worker deploy kubernetes: {into} already holds {', '.join(there)}; "
            "nothing written (remove them, or choose another directory)",
            file=sys.stderr,
        )
        return 1
    for name, text in files.items():
        (into / name).write_text(text)
    print(f"wrote {', '.join(files)} into {into}: edit the image, then `kubectl apply -k {into}`")
    return 0

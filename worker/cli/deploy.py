"""`embed-worker deploy FILE`: the operating files an install needs, printed from the package.

An installed wheel has no checkout beside it, yet docs/operating.md's systemd steps install a
unit file and an env file, and its monitoring section loads alert rules and a dashboard. The
wheel carries them (pyproject.toml force-includes them under worker/_deploy); in a checkout they
are read from where they are edited (deploy/, the env example at the top).
"""

from __future__ import annotations

import sys
from pathlib import Path

from worker.schema_files import bundled_or_checkout

# name -> (what it is, its path in a checkout; in the wheel it is worker/_deploy/<basename>)
FILES: dict[str, tuple[str, str]] = {
    "systemd": ("the systemd unit", "deploy/embed-worker.service"),
    "env": ("every setting, commented, for an env file", "embed-worker.env.example"),
    "alerts": ("Prometheus alerting rules", "deploy/prometheus/alerts.yml"),
    "dashboard": ("a Grafana dashboard", "deploy/grafana/embed-worker.json"),
}


def path_of(name: str) -> Path:
    checkout = FILES[name][1]
    return bundled_or_checkout(f"_deploy/{Path(checkout).name}", checkout)


def print_file(name: str) -> int:
    sys.stdout.write(path_of(name).read_text())
    return 0

"""deploy/prometheus: the rules pass `promtool check rules`, their unit tests pass `promtool test
rules`, every alert is tested, and every alert has a summary and a runbook entry that exists.

promtool comes from Debian's `prometheus` package (`make test` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted(RULES.parent.glob("*test*.yml"))
OPERATING = ROOT / "docs" / "operating.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; `make test` installs it)")
    return found


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def github_anchor(heading: str) -> str:
    """The anchor GitHub and most Markdown renderers give a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no *test*.yml beside alerts.yml"
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULES.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"


def test_every_alert_has_a_summary_and_a_runbook_entry_in_the_docs() -> None:
    headings = {
        github_anchor(line.lstrip("#"))
        for line in OPERATING.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alerting_rules():
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), rule["alert"]
        assert rule.get("labels", {}).get("severity") in ("page", "warning"), rule["alert"]
        path, _, anchor = annotations.get("runbook_url", "").partition("#")
        assert path == "docs/operating.md", rule["alert"]
        assert anchor in headings, f"{rule['alert']}: no heading for #{anchor}"


def test_the_docs_list_every_alert_with_its_duration() -> None:
    listed = dict(
        re.findall(r"^\| `(EmbedWorker\w+)` \|.*\| (\w+) \|$", OPERATING.read_text(), re.M)
    )
    assert listed == {rule["alert"]: rule.get("for", "0m") for rule in alerting_rules()}


def test_anchor_of_a_heading_with_punctuation() -> None:
    assert github_anchor(" A table's jobs are deferred") == "a-tables-jobs-are-deferred"

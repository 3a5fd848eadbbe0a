"""A real Prometheus server (Debian's `prometheus`) scrapes a running worker: every expression of
deploy/grafana/embed-worker.json returns series, every series an alert in
deploy/prometheus/alerts.yml selects exists, and the server evaluates every rule without error.
The worker's /metrics equal the documented table (names, labels, label values).

The worker serves one table with a model it has, and one whose model it lacks (deferred; its
model fails to load), with a blank row among the others, so that the series alerts and panels
select exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.support.cluster import REPO, free_port
from tests.support.docs import documented_metrics
from tests.support.models import MINILM
from tests.support.process import WorkerProcess, wait_for
from worker import metrics

pytestmark = pytest.mark.slow

Conn = psycopg.Connection[Any]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "embed-worker.json"
MISSING_MODEL = "bge-small-en-v1.5"  # registered in SQL, absent from the test's model path
# Metric names in our expressions; not preceded by a name character (so `up` is not matched
# inside `embed_worker_database_up`), with their label matchers.
SELECTOR = re.compile(r"(?<![\w:])(up|embed_worker_\w+|process_\w+|job:[\w:]+)(\{[^}]*\})?")


class Prometheus:
    def __init__(self, scrape: str, directory: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus not installed (Debian package; `make test` installs it)")
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "embed-worker", "static_configs": [{"targets": [scrape]}]}
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (directory / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = directory / "prometheus.log"

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                body = json.loads(error.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def series(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        target["expr"].replace("$__rate_interval", "30s")
        for panel in panels
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_selectors() -> set[str]:
    return {
        name + (matchers or "")
        for rule in alert_rules()
        for name, matchers in SELECTOR.findall(rule["expr"])
    }


@pytest.fixture
def tables(conn: Conn) -> None:
    conn.execute("CREATE TABLE served (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('served', 'body', model => %s)", (MINILM,))
    conn.execute(
        "INSERT INTO served SELECT g, CASE WHEN g = 7 THEN '  ' ELSE 'note ' || g END"
        " FROM generate_series(1, 40) g"
    )
    conn.execute("CREATE TABLE waiting (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('waiting', 'body', model => %s)", (MISSING_MODEL,))
    conn.execute("INSERT INTO waiting SELECT g, 'text ' || g FROM generate_series(1, 5) g")
    # A remote model whose provider is down (nothing listens on port 9): its circuit breaker's
    # gauge has a series only once the worker called it.
    conn.execute(
        "SELECT embeddings.register_model('unreachable', 384, 'openai', 'http://127.0.0.1:9/v1',"
        " 'text-embedding-3-small', max_tokens => 256, timeout_seconds => 1)"
    )
    conn.execute("CREATE TABLE remote (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('remote', 'body', model => 'unreachable')")
    conn.execute("INSERT INTO remote SELECT g, 'text ' || g FROM generate_series(1, 3) g")


@pytest.fixture
def prometheus_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="embed-worker-prometheus-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def worker(
    tables: None, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> WorkerProcess:
    process = start_worker(
        EMBED_CACHE_DIR=str(tmp_path / "cache"), EMBED_OFFLINE="1", HF_HUB_OFFLINE="1"
    )
    process.wait_ready()
    return process


@pytest.fixture
def prometheus(worker: WorkerProcess, prometheus_dir: Path) -> Iterator[Prometheus]:
    server = Prometheus(f"127.0.0.1:{worker.port}", prometheus_dir)
    try:
        wait_for(server.ready, 60, 0.2, "prometheus to be ready")
        yield server
    finally:
        server.stop()


def test_every_dashboard_and_alert_expression_returns_series(
    conn: Conn, worker: WorkerProcess, prometheus: Prometheus, worker_dsn: str
) -> None:
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM served").fetchone() == (39,),
        120,
        0.2,
        "the served table to be embedded",
    )
    # A search, counted by the worker that answered it (the dashboard's Search row); the
    # worker's role searches (no EMBED_SEARCH_DATABASE_URL), so it may read the table.
    conn.execute(
        sql.SQL("GRANT SELECT ON served TO {}").format(
            sql.Identifier(str(conninfo_to_dict(worker_dsn)["user"]))
        )
    )
    asked = json.dumps({"table": "served", "query": "note 3", "k": 3}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}/search",
        data=asked,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert len(json.loads(answer.read())["results"]) == 3
    wait_for(
        lambda: prometheus.series(
            'embed_worker_search_duration_seconds_count{outcome="answered"} == 1'
        ),
        60,
        0.5,
        "Prometheus to scrape the search",
    )
    expressions = dashboard_expressions() + sorted(alert_selectors())
    assert len(alert_selectors()) >= 10

    def empty() -> list[str]:
        return [e for e in expressions if not prometheus.series(e)]

    missing: list[str] = []

    def all_answer() -> bool:
        missing[:] = empty()
        return not missing

    try:
        wait_for(all_answer, 120, 1.0, "every expression to return series")
    except TimeoutError:
        pytest.fail(f"expressions without series: {missing}")

    # The server evaluates every recording and alerting rule without error.
    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return (
            rules
            if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
            else None
        )

    rules = wait_for(rules_evaluated, 60, 0.5, "the rules to be evaluated")
    assert rules is not None
    assert len(rules) == len(alert_rules())
    assert [
        (r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"
    ] == []
    # Whole alert expressions are valid PromQL against real data (most are quiet: no series).
    for rule in alert_rules():
        prometheus.series(rule["expr"])
    deferred = prometheus.series("embed_worker_target_deferred == 1")
    targets = {s["metric"]["target"] for s in deferred}
    # The remote target is deferred too once its provider's breaker opens (not yet, maybe).
    assert "public.waiting.embedding" in targets
    assert targets <= {"public.waiting.embedding", "public.remote.embedding"}


def test_the_scraped_metrics_equal_the_documented_table(conn: Conn, worker: WorkerProcess) -> None:
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM served").fetchone() == (39,),
        120,
        0.2,
        "the served table to be embedded",
    )
    documented = documented_metrics()

    def scraped() -> dict[str, Any]:
        status, body = worker.get("/metrics")
        assert status == 200
        return {f.name: f for f in text_string_to_metric_families(body.decode())}

    # The deferral is counted when its batch settles, which may follow the served rows'.
    def with_deferral() -> dict[str, Any] | None:
        found = scraped()
        return found if "embed_worker_target_deferred" in found else None

    families = wait_for(with_deferral, 60, 0.2, "the deferred target's series")
    assert families is not None
    names = set()
    for family in families.values():
        kind = family.type  # as the exposition says (an info metric is a gauge there)
        name = family.name + ("_total" if kind == "counter" else "")
        names.add(name)
        doc = documented[name]
        assert kind == doc.type, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= doc.labels, (name, sample.labels)
            for label, value in sample.labels.items():
                if label in doc.values:
                    assert value in doc.values[label], (name, label, value)
    assert names == set(documented)
    info = families["embed_worker_model_info"].samples[0].labels
    assert set(info) == documented["embed_worker_model_info"].labels == set(metrics.MODEL_INFO_KEYS)
    rows = {
        (s.labels["target"], s.labels["outcome"]): s.value
        for s in families["embed_worker_rows"].samples
        if s.name == "embed_worker_rows_total"
    }
    assert rows == {
        ("public.served.embedding", "embedded"): 39,
        ("public.served.embedding", "cleared"): 1,
    }

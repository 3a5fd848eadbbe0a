"""Searches reranked by a registered remote rerank API (embeddings.register_reranker(), a
stand-in of each kind: tests/support/rerank_server.py) with real all-MiniLM-L6-v2 vectors: the
answer is the first ranking's top `depth` reordered exactly as the stand-in scores them
(computed here from its rule); a deep rerank is split into requests within the registration's
limits, never more in flight than it allows; a short Retry-After is waited; a long one, a
provider down, an open circuit, a refused or missing key, a plain-http registration answer
RerankerUnavailable (503 over HTTP) naming the reranker, and never the key."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.integration.test_cli import run_cli
from tests.integration.test_rerank import BODIES, QUESTION, RERANKER, docs, reranker_path
from tests.support.rerank_server import KINDS, RerankServer, overlap
from worker import config
from worker.models.files import ModelLocation
from worker.models.loaded import LoadedModels
from worker.models.remote import breaker as breakers
from worker.models.remote import reranker as remote_reranker
from worker.models.reranker import CrossEncoder, LoadedRerankers
from worker.retrieval import rerank, search
from worker.retrieval.request import SearchRequest
from worker.retrieval.targets import find_target

__all__ = ["docs", "reranker_path"]  # fixtures of tests/integration/test_rerank.py

Conn = psycopg.Connection[Any]
KEYS = {"cohere": "COHERE_API_KEY", "jina": "JINA_API_KEY", "voyage": "VOYAGE_API_KEY"}
KEY = "jina_REMOTE_RERANK_0123456789abcdef"


@pytest.fixture(autouse=True)
def fresh_breakers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Breakers are per process (per host): each test starts with closed ones."""
    monkeypatch.setattr(remote_reranker, "BACKOFF", lambda state: 0.01)
    breakers.reset()
    yield
    breakers.reset()


@pytest.fixture
def rerankers(reranker_path: str) -> Iterator[LoadedRerankers]:
    """As the HTTP server and the CLI build them: keys by the environment at each request."""
    found = LoadedRerankers(
        ModelLocation.of(reranker_path), threads=1, api_key=config.api_key_from_env
    )
    yield found
    found.close()


def register(conn: Conn, server: RerankServer, name: str = "remote-rr", **options: Any) -> str:
    named = "".join(f", {k} => %({k})s" for k in options)
    conn.execute(
        f"SELECT embeddings.register_reranker(%(name)s, %(kind)s, %(endpoint)s{named})",
        {"name": name, "kind": server.kind, "endpoint": server.base_url, **options},
    )
    return name


def searched(
    conn: Conn, embedders: LoadedModels, rerankers: LoadedRerankers, **fields: Any
) -> list[dict[str, Any]]:
    request = SearchRequest.parse({"table": "docs", "query": QUESTION, **fields})
    return search.run(conn, embedders.get, request, load_reranker=rerankers.get)


def expected(
    conn: Conn, embedders: LoadedModels, rerankers: LoadedRerankers, depth: int, k: int
) -> list[tuple[Any, float]]:
    """The first ranking's `depth` results, scored by the stand-in's rule, best k."""
    first = search.ranked(conn, embedders.get, find_target(conn, "docs"), QUESTION, depth)
    scores = [overlap(QUESTION, r["content"]) for r in first]
    order = sorted(range(len(first)), key=lambda i: (-scores[i], i))[:k]
    return [(first[i]["key"], scores[i]) for i in order]


def assert_answer(results: list[dict[str, Any]], want: list[tuple[Any, float]]) -> None:
    assert [r["key"] for r in results] == [key for key, _ in want]
    assert [r["rerank_score"] for r in results] == pytest.approx([s for _, s in want], rel=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_reorders_as_the_provider_scores(
    conn: Conn,
    docs: None,
    embedders: LoadedModels,
    rerankers: LoadedRerankers,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    key = {"tei": None}.get(kind, KEY)
    if kind in KEYS:
        monkeypatch.setenv(KEYS[kind], KEY)
    with RerankServer(kind=kind, api_key=key) as server:
        register(conn, server)
        results = searched(conn, embedders, rerankers, k=4, rerank="remote-rr", rerank_depth=10)
        assert server.violations == []
        assert [r["authorization"] for r in server.requests] == [f"Bearer {KEY}" if key else None]
    want = expected(conn, embedders, rerankers, depth=10, k=4)
    assert_answer(results, want)
    first = [r["key"] for r in searched(conn, embedders, rerankers, k=4, rerank=False)]
    assert [r["key"] for r in results] != first  # the stage changed the order here


def test_the_tables_remote_reranker_is_its_default(
    conn: Conn, docs: None, embedders: LoadedModels, rerankers: LoadedRerankers
) -> None:
    with RerankServer(kind="tei") as server:
        register(conn, server)
        conn.execute("SELECT embeddings.set_rerank('docs', 'remote-rr', depth => 8)")
        results = searched(conn, embedders, rerankers, k=3)
        assert len(server.requests) == 1 and len(server.documents()[0]) == 8
    assert_answer(results, expected(conn, embedders, rerankers, depth=8, k=3))


def test_a_deep_rerank_is_split_within_the_limits(
    conn: Conn, minilm: str, embedders: LoadedModels, rerankers: LoadedRerankers
) -> None:
    """Depth 200 over text-embeddings-inference's 32 documents per request: 7 requests, never
    more than max_in_flight (3) at once, scores combined across them."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, backfill => false)", (minilm,)
    )
    rng = np.random.default_rng(5)
    topics = ["refund", "shipping", "holiday", "prices", "returns", "take", "long"]
    for i in range(240):
        body = " ".join(rng.choice(topics, size=4))
        vector = rng.standard_normal(384)
        conn.execute("INSERT INTO docs VALUES (%s, %s)", (i, f"{body} {i}"))
        conn.execute(
            "UPDATE docs SET embedding = %s::vector WHERE id = %s", (str(vector.tolist()), i)
        )
    with RerankServer(kind="tei") as server:
        server.gather = 3  # held until three are in flight together (or 3 s)
        register(conn, server, max_documents=32, max_in_flight=3)
        results = searched(conn, embedders, rerankers, k=10, rerank="remote-rr", rerank_depth=200)
        assert server.violations == []
        sizes = sorted(len(d) for d in server.documents())
        assert sizes == [28] * 3 + [29] * 4 and sum(sizes) == 200
        assert server.max_concurrent == 3
    assert_answer(results, expected(conn, embedders, rerankers, depth=200, k=10))


def test_a_short_retry_after_is_waited_and_the_search_answered(
    conn: Conn, docs: None, embedders: LoadedModels, rerankers: LoadedRerankers
) -> None:
    with RerankServer(kind="tei") as server:
        server.retry_after = 0.3
        server.faults = ["429"]
        register(conn, server)
        results = searched(conn, embedders, rerankers, k=3, rerank="remote-rr", rerank_depth=8)
        assert server.faults_served == {"429": 1} and len(server.requests) == 2
    assert_answer(results, expected(conn, embedders, rerankers, depth=8, k=3))


@pytest.mark.parametrize("failure", ["long retry-after", "down", "circuit open", "refused"])
def test_a_reranker_that_cannot_answer_is_unavailable_and_named(
    conn: Conn,
    docs: None,
    embedders: LoadedModels,
    rerankers: LoadedRerankers,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """Never the first ranking's order passed off as reranked: RerankerUnavailable (a 503)."""
    monkeypatch.setenv("COHERE_API_KEY", KEY)
    with RerankServer(kind="cohere", api_key=KEY) as server:
        register(conn, server, name="co-rr")
        expect = {
            "long retry-after": "rate limited \\(429\\); retry after 120 s",
            "down": "HTTP 500.*after 4 attempts",
            "circuit open": "circuit open",
            "refused": "the API key of credential 'cohere' was refused",
        }[failure]
        if failure == "long retry-after":
            server.retry_after = 120
            server.faults = ["429"]
        elif failure in ("down", "circuit open"):
            server.down = True
        if failure == "circuit open":
            for _ in range(2):  # 8 failures in a row: the breaker opens after 5
                with pytest.raises(rerank.RerankerUnavailable):
                    searched(conn, embedders, rerankers, rerank="co-rr")
        if failure == "refused":
            monkeypatch.setenv("COHERE_API_KEY", KEY[:-4] + "WXYZ")
            server.echo_key_in_errors = True
        asked = len(server.requests)
        with pytest.raises(rerank.RerankerUnavailable, match=f"^reranker co-rr: .*{expect}") as e:
            searched(conn, embedders, rerankers, rerank="co-rr")
        if failure == "circuit open":
            assert len(server.requests) == asked  # nothing sent while the circuit is open
    assert KEY[:-4] not in str(e.value) and KEY[-8:] not in str(e.value)


def test_no_key_is_unavailable_without_a_request(
    conn: Conn,
    docs: None,
    embedders: LoadedModels,
    rerankers: LoadedRerankers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VOYAGE_API_KEY", raising=False)
    monkeypatch.delenv("EMBED_API_KEY_DIR", raising=False)
    with RerankServer(kind="voyage", api_key=KEY) as server:
        register(conn, server, name="vo")
        with pytest.raises(
            rerank.RerankerUnavailable,
            match="no API key for credential 'voyage': set VOYAGE_API_KEY",
        ):
            searched(conn, embedders, rerankers, rerank="vo")
        assert server.requests == []


def test_the_key_is_sent_as_bearer_and_shown_nowhere(
    conn: Conn,
    dsn: str,
    docs: None,
    embedders: LoadedModels,
    rerankers: LoadedRerankers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JINA_API_KEY", KEY)
    with RerankServer(kind="jina", api_key=KEY) as server:
        server.echo_key_in_errors = True
        register(conn, server, name="ji")
        searched(conn, embedders, rerankers, rerank="ji", rerank_depth=5)
        assert server.requests[0]["authorization"] == f"Bearer {KEY}"
        # POISON: a 400 whose message echoes the key it was sent.
        conn.execute("UPDATE docs SET body = 'POISON refund' WHERE id = 1")  # (vector cleared)
        conn.execute(
            "UPDATE docs SET embedding = (SELECT embedding FROM docs WHERE id = 2) WHERE id = 1"
        )
        with pytest.raises(rerank.RerankerUnavailable, match="refused the input") as e:
            searched(conn, embedders, rerankers, rerank="ji", rerank_depth=12)
        cli = run_cli(
            "search",
            "docs",
            QUESTION,
            "--rerank",
            "ji",
            "--database-url",
            dsn,
            env={"JINA_API_KEY": KEY},
        )
    assert cli.returncode != 0 and "ji" in cli.stderr
    rows = conn.execute("SELECT r::text FROM embeddings.rerankers r").fetchall()
    for text in (str(e.value), repr(e.value), caplog.text, cli.stdout + cli.stderr, str(rows)):
        assert KEY not in text and KEY[:12] not in text and KEY[-8:] not in text, text


def test_plain_http_beyond_loopback_is_refused_when_the_reranker_is_built(
    conn: Conn,
    docs: None,
    embedders: LoadedModels,
    rerankers: LoadedRerankers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A row set by hand (register_reranker() refuses it): the worker refuses it too, and
    sends nothing."""
    conn.execute(
        "INSERT INTO embeddings.rerankers (name, provider, endpoint, remote_model, max_documents,"
        " max_tokens, max_in_flight, timeout_seconds, credential) VALUES ('far', 'cohere',"
        " 'http://rerank.example.com/v2', 'm', 10, 10, 1, 1, 'cohere')"
    )
    with caplog.at_level(logging.ERROR):
        for _ in range(2):
            with pytest.raises(
                rerank.RerankerUnavailable, match=r"^reranker far: .*over plain http"
            ):
                searched(conn, embedders, rerankers, rerank="far")
    assert caplog.text.count("over plain http") == 1  # logged once


def test_an_unknown_kind_is_unavailable_and_says_why(
    conn: Conn, docs: None, embedders: LoadedModels, rerankers: LoadedRerankers
) -> None:
    conn.execute(
        "INSERT INTO embeddings.rerankers (name, provider, endpoint, max_documents, max_tokens,"
        " max_in_flight, timeout_seconds) VALUES ('newer', 'rerankly', 'https://x.test', 1, 1, 1, 1)"
    )
    with pytest.raises(
        rerank.RerankerUnavailable, match="reranker newer: not served: unknown rerank provider"
    ):
        searched(conn, embedders, rerankers, rerank="newer")


def test_a_registered_name_wins_over_a_directory_and_changes_are_seen_at_once(
    conn: Conn,
    docs: None,
    embedders: LoadedModels,
    rerankers: LoadedRerankers,
    reranker_path: str,
) -> None:
    """`tiny-rerank` is a cross-encoder directory; registered as a remote reranker too, the
    remote one answers; moved to another endpoint, the next search goes there; unregistered,
    the directory answers again."""
    with RerankServer(kind="tei") as one, RerankServer(kind="tei") as other:
        register(conn, one, name=RERANKER)
        results = searched(conn, embedders, rerankers, k=3, rerank=RERANKER, rerank_depth=8)
        assert len(one.requests) == 1
        assert_answer(results, expected(conn, embedders, rerankers, depth=8, k=3))
        register(conn, other, name=RERANKER)
        searched(conn, embedders, rerankers, k=3, rerank=RERANKER, rerank_depth=8)
        assert (len(one.requests), len(other.requests)) == (1, 1)
    conn.execute("SELECT embeddings.unregister_reranker(%s)", (RERANKER,))
    local = searched(conn, embedders, rerankers, k=3, rerank=RERANKER, rerank_depth=8)
    model = CrossEncoder.load(RERANKER, location=ModelLocation.of(reranker_path), threads=1)
    first = searched(conn, embedders, rerankers, k=8, rerank=False)
    scores = model.score(QUESTION, [r["content"] for r in first])
    best = sorted(range(8), key=lambda i: (-scores[i], i))[:3]
    assert [r["key"] for r in local] == [first[i]["key"] for i in best]


def test_the_command_line_reranks_remotely(
    conn: Conn, dsn: str, docs: None, embedders: LoadedModels, rerankers: LoadedRerankers
) -> None:
    with RerankServer(kind="cohere", api_key=KEY) as server:
        register(conn, server, name="co")
        args = ("search", "docs", QUESTION, "-k", "3", "--database-url", dsn, "--json")
        result = run_cli(
            *args, "--rerank", "co", "--rerank-depth", "10", env={"COHERE_API_KEY": KEY}
        )
        assert result.returncode == 0, result.stderr
        assert server.requests[0]["authorization"] == f"Bearer {KEY}"
    assert_answer(json.loads(result.stdout), expected(conn, embedders, rerankers, 10, 3))
    assert len(BODIES) >= 10


def test_a_role_that_may_not_read_the_registry_is_told_so(
    conn: Conn, dsn: str, docs: None, embedders: LoadedModels, rerankers: LoadedRerankers
) -> None:
    """Every role reads embeddings.rerankers unless an administrator revoked it: then its
    reranked searches say what to grant, and the others run as before."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute(f"GRANT SELECT ON docs TO {role}")
    conn.execute("REVOKE SELECT ON embeddings.rerankers FROM PUBLIC")
    try:
        with psycopg.connect(make_conninfo(dsn, user=role), autocommit=True) as app:
            request = SearchRequest.parse({"table": "docs", "query": QUESTION, "k": 2})
            assert len(search.run(app, embedders.get, request)) == 2
            with pytest.raises(
                rerank.RerankerUnavailable, match=r"may not read embeddings\.rerankers"
            ):
                searched(app, embedders, rerankers, rerank=RERANKER)
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_doctor_checks_the_rerankers_and_model_list_shows_them(
    conn: Conn, dsn: str, tmp_path: Any
) -> None:
    """Each registered remote reranker: its key in this environment (FAIL when a table reranks
    with it, a warning otherwise), a plain-http endpoint refused; a table's reranker that is
    neither registered nor on the model path. `model list` lists them, never a key."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', backfill => false)")
    conn.execute(
        "SELECT embeddings.register_reranker('co', 'cohere', remote_model => 'rerank-v3.5')"
    )
    conn.execute("SELECT embeddings.register_reranker('vo', 'voyage')")
    conn.execute("SELECT embeddings.register_reranker('bge', 'tei', 'http://10.0.0.7:8080')")
    conn.execute(
        "INSERT INTO embeddings.rerankers (name, provider, endpoint, remote_model, max_documents,"
        " max_tokens, max_in_flight, timeout_seconds, credential) VALUES ('far', 'jina',"
        " 'http://rerank.example.com/v1', 'm', 10, 10, 1, 1, 'jina')"
    )
    conn.execute("SELECT embeddings.set_rerank('docs', 'co')")
    env = {"COHERE_API_KEY": "", "VOYAGE_API_KEY": "", "EMBED_API_KEY_DIR": str(tmp_path)}

    def lines() -> dict[str, str]:
        result = run_cli("doctor", "--database-url", dsn, env=env)
        found = {}
        for line in result.stdout.splitlines():
            if line[6:].startswith("reranker "):
                found[line[6:].split(":")[0].removeprefix("reranker ")] = line
        return found

    found = lines()
    assert found["co"].startswith("FAIL") and "no API key for credential 'cohere'" in found["co"]
    assert found["vo"].startswith("warn") and "VOYAGE_API_KEY" in found["vo"]
    assert found["bge"].startswith("ok") and "no key needed" in found["bge"]
    assert found["far"].startswith("warn") and "over plain http" in found["far"]

    (tmp_path / "cohere").write_text(KEY + "\n")
    conn.execute("SELECT embeddings.set_rerank('docs', 'nowhere-rr')")
    found = lines()
    assert found["co"].startswith("ok") and f"file {tmp_path / 'cohere'}" in found["co"]
    assert found["nowhere-rr"].startswith("FAIL") and "public.docs" in found["nowhere-rr"]

    listed = run_cli("model", "list", "--database-url", dsn, env=env)
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "remote reranker (key: file" in rows["co"] and "cohere rerank-v3.5" in rows["co"]
    assert "rerank" in rows["bge"].split() and "10.0.0.7:8080" in rows["bge"]
    assert KEY not in listed.stdout + listed.stderr


def test_a_mistyped_reranker_is_the_callers_mistake_naming_the_registered_ones(
    conn: Conn, dsn: str, docs: None, embedders: LoadedModels, rerankers: LoadedRerankers
) -> None:
    """A search naming a reranker that is neither registered nor a directory is told the
    registered rerankers and the near miss, not the embedding models' catalog; from the command
    line too. The table's own set_rerank() naming a reranker this worker lacks stays a 503 (the
    operator's to fix): only a name the request made up is the caller's mistake."""
    with RerankServer(kind="cohere", api_key=KEY) as server:
        register(conn, server, name="bar-rerank")
        with pytest.raises(rerank.UnknownReranker) as raised:
            searched(conn, embedders, rerankers, rerank="bar-rerenk")
        message = str(raised.value)
        assert "'bar-rerenk'" in message and "did you mean 'bar-rerank'?" in message
        assert "registered rerankers: bar-rerank" in message
        assert "gte-small" not in message and "Known models" not in message

        result = run_cli(
            "search", "docs", QUESTION, "--database-url", dsn, "--rerank", "bar-rerenk"
        )
        assert result.returncode != 0
        assert "did you mean 'bar-rerank'?" in result.stderr and "Known models" not in result.stderr

        conn.execute("SELECT embeddings.set_rerank('docs', 'bar-rerenk')")
        with pytest.raises(rerank.RerankerUnavailable):
            searched(conn, embedders, rerankers)

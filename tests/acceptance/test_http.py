"""The HTTP routes of a running worker, and the Supabase Edge Function contract (push mode)."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support import pg_net
from tests.support.cluster import Cluster
from tests.support.jobs import JOBS, clear_queue
from tests.support.models import MINILM
from tests.support.process import WorkerProcess, wait_for
from tests.support.rawhttp import exchange, read_answer, request

Conn = psycopg.Connection[Any]
TOKEN = "s3cret-token-value"


def post(
    worker: WorkerProcess,
    path: str,
    body: Any,
    *,
    token: str | None = TOKEN,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(worker.url + path, data=data, method="POST")
    request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


@pytest.fixture
def http_worker(conn: Conn, start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    worker.wait_ready()
    return worker


def test_health_readiness_and_metrics(http_worker: WorkerProcess) -> None:
    assert http_worker.get("/healthz") == (200, b'{"status": "ok"}')
    status, body = http_worker.get("/readyz")
    assert status == 200 and json.loads(body) == {"status": "ready"}
    status, body = http_worker.get("/metrics")
    text = body.decode()
    assert status == 200
    for name in (
        "embed_worker_jobs_total",
        "embed_worker_queue_jobs",
        "embed_worker_model_info{",
        "embed_worker_batch_stage_duration_seconds_bucket",
        "embed_worker_tokens_total",
    ):
        assert name in text, name
    assert 'name="all-MiniLM-L6-v2"' in text


def test_metrics_and_readiness_never_wait_on_a_watched_table(
    conn: Conn, dsn: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'hello'), (2, 'world')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    worker = start_worker()
    worker.wait_ready()
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (2,),
        60,
        what="the rows embedded",
    )

    with psycopg.connect(dsn) as holder:
        # Anything that read (or even sized) the table would now wait: a scrape times out at 5 s.
        holder.execute("LOCK docs IN ACCESS EXCLUSIVE MODE")
        answers = [worker.get(path)[0] for path in ("/metrics", "/readyz") * 3]

    assert answers == [200] * 6


def test_embed_matches_the_supabase_quickstart_shape(http_worker: WorkerProcess) -> None:
    status, _, body = post(http_worker, "/embed", {"input": "hello world"})
    assert status == 200
    vector = np.array(body["embedding"])
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-3
    status, _, many = post(http_worker, "/embed", {"input": ["hello world", "bye"]})
    assert status == 200 and len(many["embeddings"]) == 2
    assert np.allclose(many["embeddings"][0], vector, atol=1e-5)


@pytest.mark.parametrize("raw", [b"", b"  ", b"{}", b"null", b"[]"])
def test_a_search_without_its_fields_is_told_both(http_worker: WorkerProcess, raw: bytes) -> None:
    """An empty body, or one without either field, is a 400 naming both fields a search
    needs, not "malformed JSON" or the first field alone."""
    got, _, body = post(http_worker, "/search", None, raw=raw)
    assert got == 400, body
    assert '"table"' in body["error"] and '"query"' in body["error"], body


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"raw": b"{not json"}, 400, "malformed JSON"),
        ({"body": {"text": "x"}}, 400, '"input"'),
        ({"body": {"input": 42}}, 400, '"input" must be a string'),
        ({"body": {"input": []}}, 400, "1 to 256 texts"),
        (
            {"body": {"input": "x"}, "content_type": "text/plain"},
            400,
            "expected Content-Type application/json",
        ),
        ({"body": {"input": "x"}, "token": None}, 401, "bearer token"),
        ({"body": {"input": "x"}, "token": "wrong"}, 401, "bearer token"),
        ({"body": {"input": "x", "model": "no-such-model"}}, 400, "must name a known model"),
        ({"body": {"input": "x", "model": "/etc"}}, 400, "not a path"),
        ({"body": {"input": "x", "model": "../shared/models/x"}}, 400, "not a path"),
        ({"body": {"input": "x", "model": "bge-small-en-v1.5"}}, 404, "never download"),
        ({"raw": b'{"input": "\\ud800"}'}, 400, "lone surrogate"),
        ({"raw": b'{"input": ["ok", "\\udfff x"]}'}, 400, "lone surrogate"),
    ],
)
def test_bad_requests_get_a_clear_status_and_reason(
    http_worker: WorkerProcess, kwargs: dict[str, Any], status: int, message: str
) -> None:
    got, _, body = post(http_worker, "/embed", kwargs.pop("body", None), **kwargs)
    assert got == status
    assert message in body["error"]
    assert TOKEN not in json.dumps(body)


def test_a_401_says_which_scheme_it_takes(http_worker: WorkerProcess) -> None:
    """RFC 9110 11.6.1: a 401 carries a WWW-Authenticate challenge."""
    for token in (None, "wrong"):
        status, headers, _ = post(http_worker, "/embed", {"input": "x"}, token=token)
        assert status == 401 and headers.get("WWW-Authenticate") == "Bearer", headers


def test_an_oversized_body_is_refused_before_it_is_read(http_worker: WorkerProcess) -> None:
    """413 on the headers alone. (Sending the whole body races the server's early answer and
    close: the client may get a broken pipe instead of the 413, as curl or a browser would.)"""
    host, port = http_worker.url.removeprefix("http://").split(":")
    client = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        client.putrequest("POST", "/embed")
        client.putheader("Content-Type", "application/json")
        client.putheader("Authorization", f"Bearer {TOKEN}")
        client.putheader("Content-Length", str(1_048_576 + 1))
        client.endheaders()
        response = client.getresponse()
        assert response.status == 413
        assert "body over" in json.loads(response.read())["error"]
    finally:
        client.close()


def test_wrong_methods_and_routes(http_worker: WorkerProcess) -> None:
    assert http_worker.get("/embed")[0] == 405
    assert http_worker.get("/functions/v1/embed")[0] == 405
    assert http_worker.get("/nope")[0] == 404
    request = urllib.request.Request(
        http_worker.url + "/functions/v1/embed", method="PUT", data=b"[]"
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    with raised.value as error:
        assert error.code == 405 and error.headers["Allow"] == "POST"


def guide_batches(conn: Conn, batch_size: int = 2) -> list[list[dict[str, Any]]]:
    """The request bodies exactly as the Supabase guide's util.process_embeddings() builds them
    (minus the pg_net call, which this machine cannot make)."""
    rows = conn.execute(
        """
        WITH numbered_jobs AS (
            SELECT message || jsonb_build_object('jobId', msg_id) AS job_info,
                   (row_number() OVER (ORDER BY 1) - 1) / %(batch_size)s AS batch_num
            FROM pgmq.read(queue_name => 'embedding_jobs', vt => 300, qty => 10 * %(batch_size)s)
        ),
        batched_jobs AS (
            SELECT jsonb_agg(job_info) AS batch_array, batch_num FROM numbered_jobs GROUP BY batch_num
        )
        SELECT batch_array FROM batched_jobs ORDER BY batch_num
        """,
        {"batch_size": batch_size},
    ).fetchall()
    return [r[0] for r in rows]


def supabase_table(conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE documents (id integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY, title text NOT NULL, content text NOT NULL, embedding halfvec(384))"
    )
    conn.execute("CREATE INDEX ON documents USING hnsw (embedding halfvec_cosine_ops)")
    conn.execute(
        "CREATE FUNCTION embedding_input(doc documents) RETURNS text LANGUAGE plpgsql IMMUTABLE"
        " AS $$ BEGIN RETURN '# ' || doc.title || E'\\n\\n' || doc.content; END; $$"
    )
    conn.execute(
        "SELECT embeddings.watch('documents', 'embedding_input', model => 'all-MiniLM-L6-v2', triggers => false)"
    )
    clear_queue(conn)
    conn.execute(
        "INSERT INTO documents (title, content) SELECT 'Title ' || g, 'Body text ' || g FROM generate_series(1, 5) g"
    )
    conn.execute(
        "SELECT pgmq.send('embedding_jobs', jsonb_build_object('id', id, 'schema', 'public', 'table', 'documents',"
        " 'contentFunction', 'embedding_input', 'embeddingColumn', 'embedding')) FROM documents ORDER BY id"
    )


def test_push_mode_follows_the_edge_function_contract(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    supabase_table(conn)
    # One job for a table nobody registered, and one whose row is gone.
    conn.execute(
        """SELECT pgmq.send('embedding_jobs', '{"id": 1, "schema": "public", "table": "nope", "contentFunction": "f", "embeddingColumn": "embedding"}')"""
    )
    batches = guide_batches(conn)  # leased for 300 s: the worker's own pull loop cannot see them
    conn.execute("DELETE FROM documents WHERE id = 5")
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    worker.wait_ready()

    completed, failed = [], []
    for batch in batches:
        status, headers, body = post(worker, "/functions/v1/embed", batch)
        assert status == 200
        assert headers["x-completed-jobs"] == str(len(body["completedJobs"]))
        assert headers["x-failed-jobs"] == str(len(body["failedJobs"]))
        completed += body["completedJobs"]
        failed += body["failedJobs"]

    assert sorted(job["id"] for job in completed) == [
        1,
        2,
        3,
        4,
        5,
    ]  # a gone row is done, not failed
    assert [job["table"] for job in failed] == ["nope"]
    assert "register it with: SELECT embeddings.watch('public.nope'" in failed[0]["error"]
    assert conn.execute("SELECT count(*) FROM documents WHERE embedding IS NULL").fetchone() == (0,)
    assert conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone() == (0,)

    # A job id that is not queued (processed already) fails with the reason; an invalid body is a 400.
    status, _, body = post(worker, "/functions/v1/embed", [{"jobId": 999999, "id": 1}])
    assert status == 200 and "no such job" in body["failedJobs"][0]["error"]
    assert post(worker, "/functions/v1/embed", {"jobs": []})[0] == 400
    assert post(worker, "/functions/v1/embed", [{"id": 1}])[0] == 400
    assert post(worker, "/functions/v1/embed", [], token=None)[0] == 401


def test_dispatch_batches_are_what_the_endpoint_takes(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """embeddings.dispatch() posts these bodies with pg_net; here the test posts them itself
    (pg_net has no package for these machines)."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'text number ' || g FROM generate_series(1, 300) g")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')"
    )  # 3 jobs of <=128 keys
    bodies = [
        r[0] for r in conn.execute("SELECT * FROM embeddings.dispatch_batches(2, 10)").fetchall()
    ]
    assert [len(b) for b in bodies] == [2, 1]
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    worker.wait_ready()
    for body in bodies:
        status, _, result = post(worker, "/functions/v1/embed", body)
        assert status == 200 and result["failedJobs"] == []
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (300,), timeout=30
    )


def test_dispatch_posts_through_pg_net(
    conn: Conn, cluster: Cluster, start_worker: Callable[..., WorkerProcess]
) -> None:
    """embeddings.dispatch() posts to a running worker through pg_net: the real one where the
    server preloads it, its background worker moved into the test's database (it posts from
    one database only: left where it was, it never posts, and the test waited on it), else
    tests/support/pg_net.py's stand-in, which posts as pg_net would. Every wait is bounded."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'text number ' || g FROM generate_series(1, 20) g")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN, EMBED_PULL="false")
    worker.wait_ready()
    with pg_net.net_for(conn, cluster.admin_dsn) as net:
        requests = conn.execute(
            "SELECT embeddings.dispatch(%s, token => %s, timeout_seconds => 60)",
            (worker.url + "/functions/v1/embed", TOKEN),
        ).fetchone()
        assert requests == (1,)
        net.deliver(conn)
        wait_for(
            lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (20,),
            timeout=60,
            what="the posted jobs embedded",
        )
        conn.execute("SELECT embeddings_internal.settle_dispatched()")
        # (the worker took the post: its request is forgotten, its job done)
        assert conn.execute("SELECT count(*) FROM embeddings.dispatched").fetchone() == (0,)
        assert conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone() == (0,)


def test_a_push_only_worker_leases_nothing_itself(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """EMBED_PULL=false: jobs are done when POSTed, and the queue is otherwise left alone."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN, EMBED_PULL="false", EMBED_POLL_SECONDS=0.05)
    worker.wait_ready()
    conn.execute("INSERT INTO docs SELECT g, 'text number ' || g FROM generate_series(1, 10) g")
    # A pulling worker is woken by the insert's NOTIFY (or its 50 ms poll) and leases the job at
    # once; each of these round trips through the worker and its database takes longer than that.
    for _ in range(3):
        status, _, result = post(worker, "/functions/v1/embed", [{"jobId": 999999, "id": 1}])
        assert status == 200 and result["failedJobs"]
    assert conn.execute(f"SELECT read_ct FROM {JOBS}").fetchall() == [(0,)]

    for body in [r[0] for r in conn.execute("SELECT * FROM embeddings.dispatch_batches(5, 2)")]:
        status, _, result = post(worker, "/functions/v1/embed", body)
        assert status == 200 and result["failedJobs"] == [], result
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (10,)
    assert conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone() == (0,)


def test_blank_input_gets_no_vector_as_the_worker_stores_none(http_worker: WorkerProcess) -> None:
    status, _, body = post(http_worker, "/embed", {"input": ""})
    assert (status, body) == (200, {"embedding": None})
    status, _, body = post(http_worker, "/embed", {"input": ["hello", " \t\n", ""]})
    assert status == 200
    assert len(body["embeddings"][0]) == 384 and body["embeddings"][1:] == [None, None]


def test_the_guides_request_gets_the_guides_answer(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """The Edge Function contract, replayed: a JSON array of jobs as util.process_embeddings
    sends them; 200, the jobs echoed in completedJobs / failedJobs (with "error"), and the two
    count headers, whatever the mix."""
    supabase_table(conn)
    batches = guide_batches(conn, batch_size=5)
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    worker.wait_ready()
    sent = [*batches[0], {**batches[0][0], "jobId": 987654321}]  # the last one is not queued

    status, headers, body = post(worker, "/functions/v1/embed", sent)

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert set(body) == {"completedJobs", "failedJobs"}
    assert body["completedJobs"] == sent[:-1]  # each job exactly as sent
    assert [{k: v for k, v in job.items() if k != "error"} for job in body["failedJobs"]] == [
        sent[-1]
    ]
    assert isinstance(body["failedJobs"][0]["error"], str)
    assert (headers["x-completed-jobs"], headers["x-failed-jobs"]) == ("5", "1")


def test_readyz_is_degraded_naming_the_targets_it_cannot_serve(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 384, 512, 'mean')"
    )
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'absent-model')")
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    worker.wait_ready()

    status, raw = worker.get("/readyz")

    body = json.loads(raw)
    assert status == 200 and body["status"] == "degraded"
    assert "absent-model" in body["deferred_targets"]["public.docs.embedding"]


def test_readyz_names_a_target_whose_model_change_this_worker_cannot_load(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """The target's own model loads (its application's rows are served), the new model of its
    change does not: the change's jobs wait, and /readyz says so (it listed only targets
    whose current model could not load)."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 384, 512, 'mean')"
    )
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'absent-model')")
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    worker.wait_ready()

    status, raw = worker.get("/readyz")

    body = json.loads(raw)
    assert status == 200 and body["status"] == "degraded", body
    reason = body["deferred_targets"]["public.docs.embedding"]
    assert "change to model 'absent-model'" in reason and "absent-model" in reason, reason


def test_post_routes_are_off_beyond_loopback_without_a_token(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(EMBED_HTTP_HOST="0.0.0.0")
    worker.wait_ready()
    status, _, body = post(worker, "/embed", {"input": "x"}, token=None)
    assert status == 403 and "EMBED_HTTP_ALLOW_UNAUTHENTICATED=1" in body["error"]
    assert worker.port is not None  # refused on the headers: the body is never parsed
    deep = request("POST", "/embed", b"[" * 2000 + b"]" * 2000, headers=[("Content-Type", "x")])
    assert [a.status for a in exchange(worker.port, deep)] == [403]
    unframed = request("POST", "/embed", b"{}", headers=[("Content-Length", "two")])
    assert [a.status for a in exchange(worker.port, unframed)] == [400]
    assert worker.get("/healthz")[0] == 200

    opted_in = start_worker(EMBED_HTTP_HOST="0.0.0.0", EMBED_HTTP_ALLOW_UNAUTHENTICATED="1")
    opted_in.wait_ready()
    assert post(opted_in, "/embed", {"input": "x"}, token=None)[0] == 200


def test_slow_clients_are_cut_off_and_connections_bounded(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """The slots (EMBED_HTTP_MAX_CONNECTIONS) go to authenticated requests: two whose bodies
    stall hold both, so a third is refused 503 with Retry-After while /healthz is still
    answered; after EMBED_HTTP_TIMEOUT_SECONDS each stalled client gets 408 and is hung up on,
    and the slots serve again. (Heads that stall hold no slot: test_http_heads.py.)"""
    worker = start_worker(
        EMBED_HTTP_TOKEN=TOKEN, EMBED_HTTP_TIMEOUT_SECONDS="3", EMBED_HTTP_MAX_CONNECTIONS="2"
    )
    worker.wait_ready()
    assert worker.port is not None
    with contextlib.ExitStack() as open_sockets:
        stalled = _stall_every_slot(worker.port, 2, open_sockets)
        assert worker.get("/healthz")[0] == 200
        for sock in stalled:  # after its timeout the server answers each stalled client, hangs up
            sock.settimeout(10)
            started = time.monotonic()
            with sock.makefile("rb") as reader:
                answer = read_answer(reader)
                assert answer is not None and answer.status == 408
                assert reader.read() == b""
            assert time.monotonic() - started < 5
    wait_for(lambda: post(worker, "/embed", {"input": "x"})[0] == 200, 10, what="served again")


def embed_head(content_length: str) -> bytes:
    """The request line and headers of an authenticated POST /embed of a JSON body of
    `content_length` bytes, to be followed by as much of that body as a test sends."""
    return request(
        "POST",
        "/embed",
        headers=[
            ("Authorization", f"Bearer {TOKEN}"),
            ("Content-Type", "application/json"),
            ("Content-Length", content_length),
        ],
    )


def _stall_every_slot(
    port: int, slots: int, open_sockets: contextlib.ExitStack
) -> list[socket.socket]:
    """Holds every slot with an authenticated POST whose body stops half-way; returns those
    clients once another authenticated POST is refused 503 (a stalled client that already
    timed out, on a slow machine, makes the attempt start over)."""
    head = embed_head(content_length="100")

    def attempt() -> list[socket.socket] | None:
        clients = [
            open_sockets.enter_context(socket.create_connection(("127.0.0.1", port)))
            for _ in range(slots)
        ]
        for sock in clients:
            sock.sendall(head + b'{"input": ')  # and then nothing more
        refused = _refused(port)
        if refused and not select.select(clients, [], [], 0)[0]:
            return clients
        for sock in clients:
            sock.close()
        return None

    clients = wait_for(attempt, timeout=30, what="every slot held by a stalled client")
    assert clients is not None
    return clients


def _refused(port: int) -> bool:
    """Whether an authenticated POST /embed is refused for want of a slot (503, Retry-After)."""
    data = request(
        "POST",
        "/embed",
        b'{"input": "x"}',
        headers=[("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json")],
    )
    answers = exchange(port, data, timeout=10)
    if [a.status for a in answers] != [503]:
        return False
    assert answers[0].headers["retry-after"] == "1" and "retry" in answers[0].error
    return True


def test_a_slow_client_holds_no_batch(http_worker: WorkerProcess) -> None:
    """Questions are batched (worker/models/query_batch.py) only once their bodies are read
    whole: a client stalled half-way through its body holds no one's answer, and is answered
    itself once its body arrives."""
    assert http_worker.port is not None
    body = b'{"input": "a question sent slowly"}'
    head = embed_head(content_length=str(len(body)))
    with socket.create_connection(("127.0.0.1", http_worker.port)) as slow:
        slow.sendall(head + body[:10])  # and then nothing, for now
        answers: list[int] = []
        threads = [
            threading.Thread(
                target=lambda i=i: answers.append(
                    post(http_worker, "/embed", {"input": f"q{i}"})[0]
                )
            )
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == [200] * 4
        assert not select.select([slow], [], [], 0)[0]  # no answer yet: its body is not whole
        slow.sendall(body[10:])
        slow.settimeout(30)
        with slow.makefile("rb") as reader:
            answer = read_answer(reader)
        assert answer is not None and answer.status == 200

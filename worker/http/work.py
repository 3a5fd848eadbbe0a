"""The POST routes' work (docs/http.md): texts embedded (/embed), push mode's jobs
(/functions/v1/embed, worker.http.push), searches (/search, worker.retrieval). Each takes a
request whose head was authorized and whose body was read (worker.http.front's WORK lane),
and answers it, or raises BadRequest with the status and the reason."""

from __future__ import annotations

import functools
from http import HTTPStatus
from typing import TYPE_CHECKING

from worker import exceptions
from worker.http import bodies, push
from worker.http.protocol import Answer, BadRequest, Request
from worker.models import catalog, files
from worker.models.query_batch import QueryBatchers
from worker.models.reranker import LoadedRerankers
from worker.retrieval.pool import SearchConnections
from worker.retrieval.search import SearchService

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.models.loaded import LoadedModels
    from worker.pipeline.targets import TargetRegistry
    from worker.process.startup import DefaultModel, Waiting

MAX_INPUTS = 256  # texts per /embed request
STOPPING_RETRY_AFTER = 5  # seconds: a worker restarting, or another one, takes jobs by then


class Work:
    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str,
        registry: TargetRegistry,
        embedders: LoadedModels,
        default_model: DefaultModel,
        push: push.Push,
        waiting: Waiting,
    ) -> None:
        self.registry = registry
        self.waiting = waiting
        self.embedders = embedders
        self.default_model = default_model
        self.push = push
        # Searches lease a connection for their SQL only: a few serve every slot.
        self.searches = SearchConnections(
            settings.search_database_url or dsn,
            max_size=settings.search_pool_size,
            lock_timeout_ms=settings.lock_timeout_ms,
            max_tables=settings.session_max_tables,
            per_transaction=settings.per_transaction,
        )
        # Questions (/search's, /embed's) to one model embedded together. A request never
        # starts a model's download (docs/security.md, HTTP): 503, not downloaded or downloading.
        self.questions = QueryBatchers(
            functools.partial(embedders.get, download=False),
            max_batch=settings.query_batch_size,
            max_wait=settings.query_batch_wait_ms / 1000,
        )
        # Searches' rerankers, built by the first search that names one: cross-encoders, and
        # remote rerank APIs as registered (each search reads the registration).
        self.rerankers = LoadedRerankers(
            settings.model_location, settings.threads, api_key=settings.api_key
        )
        self.service = SearchService(
            self.searches.connection,
            self.questions,
            load_reranker=self.rerankers.get,
            recover=self.searches.check,
        )

    def close(self) -> None:
        self.searches.close()
        self.rerankers.close()

    def embed(self, request: Request) -> Answer:
        body = bodies.request_json(request.body)
        if not isinstance(body, dict) or "input" not in body:
            raise BadRequest(HTTPStatus.BAD_REQUEST, 'expected a JSON object with "input"')
        given = body["input"]
        texts = given if isinstance(given, list) else [given]
        if not texts or len(texts) > MAX_INPUTS:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f'"input" must hold 1 to {MAX_INPUTS} texts')
        if not all(isinstance(t, str) for t in texts):
            raise BadRequest(
                HTTPStatus.BAD_REQUEST, '"input" must be a string or a list of strings'
            )
        named = body.get("model")
        if not named and not self.default_model.settings.model:
            self.check_registry()  # the default is the database's (EMBED_MODEL unset)
        model_name = named or self.default_model.name()
        if not isinstance(model_name, str):
            raise BadRequest(HTTPStatus.BAD_REQUEST, '"model" must be a string')
        self.check_model(model_name)
        # Blank text gets no vector, as the worker clears the embedding of a blank row.
        wanted = [i for i, text in enumerate(texts) if text.strip()]
        rows: list[list[float] | None] = [None] * len(texts)
        if wanted:
            vectors = self.questions.embed(model_name, [texts[i] for i in wanted])
            for i, vector in zip(wanted, vectors, strict=True):
                rows[i] = [round(float(x), 7) for x in vector]
        return Answer.json(
            HTTPStatus.OK,
            {"embeddings": rows} if isinstance(given, list) else {"embedding": rows[0]},
        )

    def check_model(self, name: str) -> None:
        """Only models already loaded or configured (the default, the targets'), or registry
        models already on disk (the catalog's, or the database's local ones as the worker last
        read them): a request never names a path, never starts a download, and never loads a
        model nobody registered."""
        configured = {self.default_model.name()} | {
            t.model for t in self.registry.snapshot().values()
        }
        if name in self.embedders.loaded() or name in configured:
            return
        registered = set(catalog.REGISTRY) | self.registry.local_models()
        if name in registered and not files.looks_like_path(name):
            try:
                self.embedders.location.locate(name)
            except exceptions.ModelNotFound:
                raise BadRequest(
                    HTTPStatus.NOT_FOUND,
                    f"model {name!r} is not present on this worker; requests never download "
                    "models (set EMBED_MODEL, or run `embed-worker model download` here)",
                ) from None
            return
        self.check_registry()  # (it may name a model registered in the database, unread yet)
        allowed = sorted(configured | registered)
        raise BadRequest(
            HTTPStatus.BAD_REQUEST,
            f'"model" must name a known model ({", ".join(allowed)}), not a path or another name',
        )

    def check_schema(self) -> None:
        """While start-up waits for the schema (not installed, of another release), the routes
        that use it answer 503 with what to run, not the raw error of a statement it lacks; and
        before it saw that no transaction pooler is in front (EMBED_POOL_MODE=session:
        worker/pooler.py), 503 too, so that no session of theirs is made there first."""
        if self.waiting.checking_pooler:
            raise exceptions.RegistryUnread(
                "not ready: starting (EMBED_POOL_MODE=session: looking at what DATABASE_URL"
                " reaches, a transaction pooler refused)"
            )
        problem = self.waiting.schema
        if problem is not None:
            raise exceptions.SchemaMismatch(problem)

    def check_registry(self) -> None:
        """Before start-up read the registry (waiting for `migrate`, the database or a queue),
        what only the database says is unknown: the default model when EMBED_MODEL is unset,
        the models registered there. 503 with what start-up waits for, not a vector of another
        model than the database's default, or a 400 for a model it has not read. A request
        that names a model the worker has without the database is served meanwhile."""
        if self.registry.read:
            return
        self.check_schema()
        raise exceptions.RegistryUnread(
            f"not ready: {self.waiting.problem or 'starting (waiting for the database)'}; POST"
            " /embed needs the database's default model and registered models, unless it names"
            ' a model ("model") this worker has without the database'
        )

    def push_jobs(self, request: Request) -> Answer:
        self.check_schema()
        try:
            result = push.process(self.push, bodies.request_json(request.body))
        except push.InvalidRequest as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        headers = {
            "x-completed-jobs": str(len(result.completed)),
            "x-failed-jobs": str(len(result.failed)),
        }
        answer = {"completedJobs": result.completed, "failedJobs": result.failed}
        if result.handed_back and result.handed_back == len(result.failed) + len(result.completed):
            # The worker is stopping and did none of it: every job is back in the queue.
            return Answer.json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "the worker is stopping: every job was handed back", **answer},
                headers={**headers, "Retry-After": str(STOPPING_RETRY_AFTER)},
            )
        # 200 whatever the jobs' fates, exactly as the guide's Edge Function: monitoring
        # written for it checks status_code = 200 and reads the counts from the headers.
        return Answer.json(HTTPStatus.OK, answer, headers=headers)

    def search(self, request: Request) -> Answer:
        from worker.retrieval import errors
        from worker.retrieval.request import SearchRequest

        try:
            asked = SearchRequest.parse(bodies.request_json(request.body))
        except ValueError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        self.check_schema()
        # As the search role when one is configured: what it may SELECT, row-level security
        # included, is what the answer holds (the worker's own role reads no user table).
        try:
            results = self.service.search(asked)
        except errors.InvalidSearch as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except errors.SearchDenied as exc:
            raise BadRequest(HTTPStatus.FORBIDDEN, str(exc)) from None
        except (exceptions.TargetError, exceptions.ConfigError) as exc:
            raise BadRequest(HTTPStatus.NOT_FOUND, str(exc)) from None
        return Answer.json(HTTPStatus.OK, {"results": results})

"""Held jobs taken at once by a worker that can serve them.

A worker that cannot serve a target (its model cannot be loaded, its provider is down, its
column does not fit the model) puts the target's jobs back for a minute without an attempt:
held (worker/pipeline/write.py, the stopped state `held` of sql/52_stopped.sql). A worker that
can serve the target does not leave them waiting for that minute: when one of its targets
becomes servable to it (at start-up, once its models are loaded; later, when a model loads or
a provider answers again) it makes the target's held jobs visible at once (the query
release_held_jobs: only jobs still as the deferral left them, never one another worker leased
since).

Every way a target becomes servable counts: its model loading (during a model change, the new
model too: the change's jobs are held for it), its provider answering, and its
redefinition (moved to a model the worker has, a model change's swap), which the keeper reads
while some target is unservable; a target redefined since the keeper's last round too (what its
jobs were held for may have come and gone between two rounds: a content column retyped and
back). Only on that change, not while a target stays servable: a
target this worker itself defers for a reason it cannot see beforehand (another producer's
vectors in the column, say) is not released again and again, and a scan of the queue is not
paid per batch.

Nor only by what changes a definition: what held a target's jobs may be mended by what gives
no new version (a GRANT of what its table's owner or the worker lacks, a content column made
again where no event trigger follows the table). While a target's jobs are held (a recent
embeddings.deferrals row), the keeper looks, each round, for a catalog row the target depends
on (held_mends in queries.sql) written since its jobs were last held: it reads the definitions
again and takes them, once for each such change, if it can serve the target now. A change that
mends nothing costs one batch that holds them again. (A mend between a batch's read and its
write, which holds them, is older than the hold: seen at the next minute's.)

Jobs another worker held are taken besides, whenever this worker has room (takeable(): the
fetcher leases them when nothing visible is left to read, worker/pipeline/lanes.py read_held):
in a fleet where only some workers can serve a target (a rolling deploy, a model change to a
model only the new hosts have), the others read its jobs as fast as it does and hold them
again as soon as they are released, so a release alone left them to the workers that cannot
serve them, a minute at a time.

The other way round, a worker that cannot serve a target records why for the target's held
jobs when its reason is new or changes (note_reasons): jobs an earlier run held wait out their
minute unread by this one, and `status` would give that run's reason (reasons are per target,
embeddings.deferrals: the latest worker's).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

from worker import db, metrics, queries
from worker.models.remote import breaker as breakers
from worker.pipeline import shadow
from worker.target import Target

if TYPE_CHECKING:
    from worker.models.loaded import LoadedModels
    from worker.pipeline.lanes import Lanes
    from worker.pipeline.targets import TargetRegistry

logger = logging.getLogger(__name__)


def unservable(queue: str, registry: TargetRegistry, embedders: LoadedModels) -> dict[str, str]:
    """Targets of `queue` the worker cannot serve now, by name, with why (their jobs wait, or
    during a model change the change's jobs: the new model cannot serve it, as
    pipeline/shadow.py holds them)."""
    return {target.name: why for target, why in _unservable(queue, registry, embedders).values()}


def _unservable(
    queue: str, registry: TargetRegistry, embedders: LoadedModels
) -> dict[int, tuple[Target, str]]:
    """unservable(), by target id."""
    failed = embedders.failures()
    # A model being downloaded holds its targets as one that failed to load does, except
    # during a change: an old model that downloads is not one that cannot load.
    unavailable = {**failed, **embedders.downloading()}
    loaded = embedders.loaded()
    found = {}
    for target in registry.snapshot().values():
        if target.queue != queue:
            continue
        model = loaded.get(target.model)
        problem = target.problem(model.dim if model is not None else None)
        if problem is None:
            problem = _model_problem(target, target.model, unavailable, embedders)
            if target.in_change and (problem is None or target.model in failed):
                # The change's new model decides, and serves alone when the old one cannot
                # load (pipeline/shadow.py: every row gets the new vector only); an old model
                # that loaded but cannot answer (its provider down) still defers the rows.
                problem = _change_problem(target, unavailable, embedders)
        if problem is not None:
            found[target.id] = (target, problem)
    return found


def _model_problem(
    target: Target, name: str, failed: dict[str, str], embedders: LoadedModels
) -> str | None:
    """Why model `name` cannot serve `target` now: it failed to load here, or a circuit of its
    provider is open (_circuit_problem)."""
    if name in failed:
        return failed[name]
    return _circuit_problem(target, name, embedders)


def _circuit_problem(target: Target, name: str, embedders: LoadedModels) -> str | None:
    """Why `target`'s model `name` cannot be asked now: a circuit of its provider is open (the
    host's, or the model's own: breaker.py). Said as a batch that meets the open circuit says
    it (stages.embed, shadow.py: the target's name first): both record the reason for the held
    jobs (note_deferrals), and another text would start the deferral's `since` over."""
    spec = embedders.remote_spec(name)
    circuit = breakers.problem_of(spec.host, name) if spec is not None else None
    return f"{target.name}: {circuit}" if circuit is not None else None


def _change_problem(target: Target, failed: dict[str, str], embedders: LoadedModels) -> str | None:
    """Why the new model of `target`'s change cannot serve it here: it cannot load, its provider
    is down, or its vectors do not fit the shadow column."""
    assert target.shadow_model is not None
    if target.shadow_model in failed:
        why = failed[target.shadow_model]
        return f"{target.name}: the change to model {target.shadow_model!r} waits: {why}"
    circuit = _circuit_problem(target, target.shadow_model, embedders)
    if circuit is not None:
        return circuit
    return shadow.shadow_problem(target, embedders.loaded().get(target.shadow_model))


class HeldJobs:
    """Releases the held jobs of the targets of one queue that become servable to this worker."""

    def __init__(
        self, queue: str, lanes: Lanes, registry: TargetRegistry, embedders: LoadedModels
    ) -> None:
        self.queue = queue
        self.lanes = lanes
        self.registry = registry
        self.embedders = embedders
        # as last checked, with the definition version each was servable under: nothing,
        # before the first check
        self._servable: dict[int, int] = {}
        self._noted: dict[int, str] = {}  # the reasons last recorded (note_reasons)
        self._mends: dict[int, str] = {}  # catalog changes seen since a hold (_mended)

    def servable(self, reasons: dict[int, str] | None = None) -> dict[int, Target]:
        """Our queue's targets whose model is loaded (built, for a remote one) and that nothing
        stops this worker from serving. A target in a model change whose new model failed to
        load here is not: the change's jobs are held for that model, and released they would
        only be held again by the first batch (every start moved them, and the held counts and
        metrics flickered); they are taken once that model loads. One whose old model cannot
        load is, once its new model is loaded: every row gets the new vector alone."""
        loaded = self.embedders.loaded()
        problems = self.reasons() if reasons is None else reasons  # (changes' included)
        return {
            target.id: target
            for target in self.registry.snapshot().values()
            if target.queue == self.queue
            and (target.model in loaded or (target.in_change and target.shadow_model in loaded))
            and target.id not in problems
        }

    def takeable(self, held_here: Mapping[int, str]) -> list[int]:
        """The targets whose held jobs this worker takes whenever it has room (the fetcher's
        read_held, when nothing is visible): those it can serve now, but those its own last
        batch held (`held_here`, the writer's held_for). Jobs that another worker held because
        it cannot serve them (another model path, a provider it cannot reach) wait for no
        minute while one that can is idle: released, they went back to the first worker that
        read them, held again. Its own holds it leaves to their minute (or to the target
        becoming servable, release()): held for a reason it could not see beforehand (another
        producer's vectors in the column), taken again they would be held again, round after
        round; and a hold another worker took from it and held again is not taken back."""
        return sorted(set(self.servable()) - set(held_here))

    def reasons(self) -> dict[int, str]:
        """Why this worker cannot serve each target of its queue that it cannot serve now, by
        target id: its own reasons, whatever another worker recorded."""
        found = _unservable(self.queue, self.registry, self.embedders)
        return {target_id: why for target_id, (_, why) in found.items()}

    def release(self, conn: db.Connection) -> int:
        """Makes the held jobs of the targets that became servable since the last call visible
        now, in both lanes; returns how many."""
        with db.translated():
            if self.reasons():
                # A redefinition can make it servable as well as a model that loads: watch()
                # moving the table to a model this worker has, a model change's swap. So while
                # something is unservable, the definitions are read again (one query) before
                # the check, not only when a batch next needs them.
                self.registry.current_definitions(conn)
            else:
                # And once they are stale (a minute), even while no batch reads them (an idle
                # queue): a target that became unservable meanwhile (its content column
                # dropped) is then known as such here, and in /readyz's deferred_targets.
                self.registry.current(conn)
            mended = self._mended(conn)
            if mended:
                # (its problem, as the catalog says it, may be gone: read again)
                self.registry.refresh(conn)
        reasons = self.reasons()  # (as the definitions are now)
        servable = self.servable(reasons)
        # Redefined since the last round counts as became: a problem of its definition (its
        # content column jsonb for a moment) may have come and gone between two rounds while a
        # batch held its jobs, and this round never saw it unservable. So does a catalog row
        # of a held target changed since the hold (what held it may be mended).
        became = {
            t
            for t, target in servable.items()
            if self._servable.get(t) != target.version or t in mended
        }
        released = 0
        for lane in self.lanes:
            if became:
                released += lane.queue.release_held(conn, became)
        # (after the release: a failed one is tried again)
        self._servable = {t: target.version for t, target in servable.items()}
        if released:
            names = ", ".join(sorted(servable[t].name for t in became))
            logger.info("took %d held job(s) of %s: servable by this worker now", released, names)
        self._gauge(reasons)
        self.note_reasons(conn, reasons)
        return released

    def _mended(self, conn: db.Connection) -> set[int]:
        """The held targets of our queue with a catalog row changed since their jobs were held
        that this round is the first to see (queries.sql: held_targets, held_mends). Not those
        this worker cannot serve for a reason of its own (a model it cannot load, a provider's
        open circuit): what mends those is not in the catalog, and taken they would be held
        again (nor, with every target of a missing model held, is each looked up each round)."""
        held = [t for (t,) in conn.execute(queries.get("held_targets"), {"queue": self.queue})]
        targets = self.registry.snapshot()
        own = self.reasons()
        held = [t for t in held if t not in own or (t in targets and targets[t].registry_problem)]
        if not held:
            self._mends = {}
            return set()
        functions = {
            str(t): [targets[t].function_name(name) for name in Target.FUNCTIONS]
            for t in held
            if t in targets
        }
        found = dict(
            conn.execute(
                queries.get("held_mends"), {"target_ids": held, "functions": Jsonb(functions)}
            ).fetchall()
        )
        mended = {t for t, rows in found.items() if self._mends.get(t) != rows}
        self._mends = found
        return mended

    def _gauge(self, reasons: dict[int, str]) -> None:
        """embed_worker_target_deferred of this worker: 1 while it cannot serve a target, not
        only after a batch of its own deferred one (in a fleet, the batches of the target may
        all be another worker's: this one's gauge said 0 while it held the target's jobs);
        0 once it can again (until a batch says otherwise)."""
        names = {t: target.name for t, target in self.registry.snapshot().items()}
        for target_id in reasons.keys() | self._noted.keys():
            if target_id in names:
                metrics.target_deferred(names[target_id], target_id in reasons)

    def note_reasons(self, conn: db.Connection, reasons: dict[int, str]) -> None:
        """Records this worker's reason for the held jobs of each target it cannot serve, when
        the reason is new or changed (a model that failed to load, a provider's circuit that
        opened): jobs held by an earlier run, or another worker, wait out their minute unread
        by this one, and status (and `run --once`'s last line) gave that run's reason, an
        EMBED_OFFLINE=1 that was no longer this one's problem. Only targets with held jobs:
        one with none holds nothing, and is told by the batch that defers its next jobs."""
        changed = {t: why for t, why in reasons.items() if self._noted.get(t) != why}
        if changed:
            held: dict[int, int] = defaultdict(int)
            for lane in self.lanes:
                for target_id, jobs in lane.queue.held_counts(conn, changed).items():
                    held[target_id] += jobs
            ids = [t for t in changed if held[t]]
            if ids:
                with db.translated():
                    conn.execute(
                        queries.compose("note_deferrals"),
                        {
                            "target_ids": ids,
                            "reasons": [changed[t] for t in ids],
                            "jobs": [held[t] for t in ids],
                        },
                    )
        self._noted = reasons  # (after the note: one that failed is tried again)

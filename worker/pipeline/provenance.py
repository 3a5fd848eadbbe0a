"""Provenance: which model produced a target's stored vectors.

A producer is 'model revision variant' (as embeddings.provenance records it): the registry
name, the revision (the first 16 hex digits of the sha256 of the ONNX file actually run, so
two copies of one revision agree and a re-exported or differently quantized file does not) and
the variant. The worker claims a target's column for its producer in the write transaction;
a column claimed by another producer is not written (its target is deferred with the reason).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker import db, exceptions, queries

if TYPE_CHECKING:
    from worker.models.loaded import LoadedModels
    from worker.pipeline.batch import Row
    from worker.target import Target

logger = logging.getLogger(__name__)

_digests: dict[tuple[str, int, float], str] = {}
_lock = threading.Lock()


def revision(model_file: Path) -> str:
    """sha256:<16 hex> of the model file, computed once per file version."""
    stat = model_file.stat()
    key = (str(model_file), stat.st_size, stat.st_mtime)
    with _lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.sha256()
    with model_file.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    value = "sha256:" + digest.hexdigest()[:16]
    with _lock:
        _digests[key] = value
    return value


def producer(embedder: Any) -> str:
    """'model revision variant' of a loaded Embedder; a remote model's (RemoteModel) says its
    own: the provider's model id @ dimensions, variant 'remote' (worker/models/remote/spec.py)."""
    own = getattr(embedder, "producer", None)
    if isinstance(own, str):
        return own
    return f"{embedder.name} {revision(Path(embedder.model_file))} {embedder.variant}"


def claim(conn: db.Connection, target_id: int, *, shadow: bool, producer_text: str) -> str:
    """Records `producer_text` for the target's column (or shadow column) unless another is
    recorded; returns the one recorded (equal to ours when we may write)."""
    model, rev, variant = producer_text.rsplit(" ", 2)
    row = conn.execute(
        queries.compose("claim_provenance"),
        {
            "target_id": target_id,
            "shadow": shadow,
            "model": model,
            "revision": rev,
            "variant": variant,
        },
    ).fetchone()
    return str(row[0]) if row and row[0] is not None else producer_text


def claim_target(
    conn: db.Connection,
    target: Target,
    rows: list[Row],
    producers: dict[int, tuple[str | None, str | None]],
) -> str | None:
    """Claims the target's column (and shadow column) for the models that embedded this batch;
    returns why not when another producer's vectors are recorded there (None: write). During a
    change, a column of another producer only loses its writes: the rows get their new vectors
    (the swap replaces that column; this is how embeddings.rewatch() moves to another variant)."""
    primary, shadow = producers.get(target.id, (None, None))
    if shadow is not None:
        stored = claim(conn, target.id, shadow=True, producer_text=shadow)
        if stored != shadow:
            return mismatch(target.name, stored, shadow, shadow=True)
    if primary is not None:
        stored = claim(conn, target.id, shadow=False, producer_text=primary)
        if stored != primary:
            if shadow is None:
                return mismatch(target.name, stored, primary, shadow=False)
            for row in rows:
                row.shadow_only = True
    return None


def recorded(conn: db.Connection) -> dict[tuple[int, bool], str]:
    """Every recorded producer, by (target id, shadow)."""
    with db.translated():
        rows = conn.execute(queries.compose("load_provenance")).fetchall()
    return {(target_id, shadow): text for target_id, shadow, text in rows}


def mismatch(target_name: str, recorded_text: str, ours: str, *, shadow: bool) -> str:
    """The deferral reason when our producer is not the recorded one."""
    where = "its new-model (shadow) vectors" if shadow else "its vectors"
    return (
        f"{target_name}: {where} were produced by {recorded_text}, this worker runs {ours}; "
        "not mixing them. Run the worker with the recorded variant/model files, or re-embed "
        "with this one: SELECT embeddings.rewatch(<table>, <column>)"
    )


def check_at_startup(
    dsn: str, targets: Iterable[Target], embedders: LoadedModels, *, per_transaction: bool = False
) -> None:
    """Says at start-up which targets hold vectors of another revision or variant of their
    model than this worker runs: it does not write there (their jobs are deferred with the
    reason) unless the target is re-embedded (embeddings.rewatch())."""
    try:
        conn = db.connect(dsn, connect_timeout=5, per_transaction=per_transaction)
    except exceptions.EmbedWorkerError:
        return
    try:
        stored_by = recorded(conn)
    except exceptions.DatabaseError:
        return
    finally:
        conn.close()
    for target in targets:
        for shadow, model in ((False, target.model), (True, target.shadow_model)):
            stored = stored_by.get((target.id, shadow))
            if model is None or stored is None or (not shadow and target.in_change):
                continue  # (a change in progress replaces the column)
            try:
                ours = producer(embedders.get(model))
            except exceptions.ModelError:
                continue
            if stored != ours:
                logger.error("%s", mismatch(target.name, stored, ours, shadow=shadow))

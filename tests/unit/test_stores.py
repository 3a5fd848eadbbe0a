"""The store strategy is chosen by the registry's store kind (embeddings.targets.store_kind),
and a kind this worker does not know is an error, never another kind's writes."""

from __future__ import annotations

import pytest

from tests.support.factories import target
from worker import exceptions
from worker.pipeline import stores


@pytest.mark.parametrize(
    ("kind", "store"),
    [("row", stores.RowStore), ("side", stores.SideStore), ("chunks", stores.ChunkStore)],
)
def test_the_store_is_the_kinds(kind: str, store: type[stores.Store]) -> None:
    assert isinstance(stores.of(target(store_kind=kind)), store)


def test_an_unknown_kind_fails_loudly() -> None:
    with pytest.raises(exceptions.TargetError, match="store kind 'tape' is not one this worker"):
        stores.of(target(store_kind="tape"))

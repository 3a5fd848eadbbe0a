"""A dataset in BEIR's layout, as BEIR distributes it (Thakur et al., 2021):

    corpus.jsonl     one document a line: {"_id", "title", "text", "metadata"?}
    queries.jsonl    one query a line: {"_id", "text", "metadata"?}, every split's
    qrels/test.tsv   the test judgements: a header line, then `query-id  corpus-id  score`

each of them plain or gzipped (`corpus.jsonl.gz`). Only the queries judged in qrels/test.tsv
are kept, as BEIR evaluates them; a judgement of a document the corpus lacks is an error (the
files do not belong together), as is a judged query missing from queries.jsonl.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, cast


class DatasetError(Exception):
    """The folder does not hold a dataset in BEIR's layout."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Dataset:
    name: str
    documents: list[Document]
    queries: dict[str, str]  # the test queries only: id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {document id: grade}
    digests: dict[str, str]  # file name -> sha256 of its uncompressed bytes

    @property
    def judgements(self) -> int:
        return sum(len(judged) for judged in self.qrels.values())


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{folder}: no {name} (nor {name}.gz): not a dataset in BEIR's layout")


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.GzipFile(path, "rb"))
    return path.open("rb")


def _lines(path: Path, digests: dict[str, str]) -> Iterator[str]:
    """The file's lines, decompressed when it ends in .gz; the sha256 of its (uncompressed)
    bytes into `digests` once read to the end."""
    sha256 = hashlib.sha256()
    with _open(path) as opened:
        for line in opened:
            sha256.update(line)
            yield line.decode("utf-8")
    digests[path.name.removesuffix(".gz")] = sha256.hexdigest()


def _jsonl(path: Path, digests: dict[str, str]) -> Iterator[dict[str, object]]:
    for number, line in enumerate(_lines(path, digests), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(item, dict) or not isinstance(item.get("_id"), str):
            raise DatasetError(f'{path}:{number}: expected an object with a string "_id"')
        yield item


def _text(item: dict[str, object], field: str, where: str) -> str:
    value = item.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f'{where}: "{field}" must be a string')
    return value


def _qrels(path: Path, digests: dict[str, str]) -> dict[str, dict[str, int]]:
    """BEIR's qrels: a header, then tab-separated query id, document id and integer grade;
    grades of 0 are kept (judged not relevant), as pytrec_eval reads them."""
    qrels: dict[str, dict[str, int]] = {}
    rows = csv.reader(_lines(path, digests), delimiter="\t", quoting=csv.QUOTE_NONE)
    for number, row in enumerate(rows, start=1):
        if number == 1 or not row:
            continue  # the header: query-id corpus-id score
        if len(row) != 3:
            raise DatasetError(f"{path}:{number}: expected 3 tab-separated columns")
        query, document, grade = (cell.strip() for cell in row)
        try:
            qrels.setdefault(query, {})[document] = int(grade)
        except ValueError:
            raise DatasetError(f"{path}:{number}: grade {grade!r} is not an integer") from None
    return qrels


def load(folder: Path) -> Dataset:
    """The dataset in `folder` (DatasetError if it is not one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    digests: dict[str, str] = {}
    qrels = _qrels(_find(folder / "qrels", "test.tsv"), digests)
    digests["qrels/test.tsv"] = digests.pop("test.tsv")
    documents = []
    seen: set[str] = set()
    corpus = _find(folder, "corpus.jsonl")
    for item in _jsonl(corpus, digests):
        doc_id = str(item["_id"])
        if doc_id in seen:
            raise DatasetError(f"{corpus}: document {doc_id!r} twice")
        seen.add(doc_id)
        where = f"{corpus}: {doc_id}"
        documents.append(Document(doc_id, _text(item, "title", where), _text(item, "text", where)))
    queries_file = _find(folder, "queries.jsonl")
    every_query = {
        str(item["_id"]): _text(item, "text", f"{queries_file}: {item['_id']}")
        for item in _jsonl(queries_file, digests)
    }
    missing = sorted(q for q in qrels if q not in every_query)
    if missing:
        raise DatasetError(f"judged queries missing from queries.jsonl: {', '.join(missing[:5])}")
    unknown = sorted({d for judged in qrels.values() for d in judged if d not in seen})
    if unknown:
        raise DatasetError(f"judged documents missing from the corpus: {', '.join(unknown[:5])}")
    if not qrels:
        raise DatasetError(f"{folder}: qrels/test.tsv judges no query")
    queries = {q: every_query[q] for q in sorted(qrels)}
    return Dataset(folder.resolve().name, documents, queries, qrels, digests)


def sample(data: Dataset, queries: int, *, seed: int = 0) -> Dataset:
    """A slice of `data` for a quick look: `queries` of its test queries (chosen by `seed`, the
    same ones every time), every document judged for them, and as many other documents again
    as distractors. Its figures run higher than the whole set's (fewer documents compete for
    each query's top 10): compare slices with slices only."""
    if queries < 1:
        raise DatasetError(f"a sample needs at least one query, not {queries}")
    if queries >= len(data.queries):
        return data
    rng = random.Random(seed)
    kept = sorted(rng.sample(sorted(data.queries), queries))
    qrels = {q: data.qrels[q] for q in kept}
    judged = {d for grades in qrels.values() for d in grades}
    others = [doc.id for doc in data.documents if doc.id not in judged]
    chosen = judged | set(rng.sample(others, min(len(judged), len(others))))
    return replace(
        data,
        name=f"{data.name}-sample{queries}",
        documents=[doc for doc in data.documents if doc.id in chosen],
        queries={q: data.queries[q] for q in kept},
        qrels=qrels,
    )

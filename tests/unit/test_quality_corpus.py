"""The retrieval-quality harness's corpus and labels (bench/quality), without a database: how a
source file becomes documented objects and pages, how labels land on chunks, the reference
fusion, and the committed query files (complete, resolvable, paraphrases not leaking names)."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

from bench.quality import generate, labels, stdlib
from bench.quality.labels import ChunkSpan, Judgement, Query
from bench.quality.retrievers import rrf

SOURCE = '''
"""A module for tests.

It has a second paragraph."""

MAX_THINGS = 10
_PRIVATE = 1
lower = 2

class Widget:
    """A widget that frobs things."""

    def __init__(self, size, *, color="red"):
        pass

    def frob(self, times=1):
        """Frob the widget several times over."""
        if times < 0:
            raise ValueError("times must not be negative")
        raise RuntimeError(f"cannot frob {times} times")

    @staticmethod
    def make(kind):
        """Make a widget of the given kind, statically."""
        raise KeyError("unknown kind: %s" % kind)

    def _hidden(self):
        """A private method is not documentation."""

def helper(path, mode="r"):
    """Help with a path in some mode or other."""
    def inner():
        raise OSError("raised by a nested function, not by helper")
'''


@pytest.fixture
def objects(tmp_path: Path) -> list[stdlib.DocObject]:
    path = tmp_path / "things.py"
    path.write_text(textwrap.dedent(SOURCE))
    return stdlib.module_objects(path, "things")


def test_a_source_file_becomes_its_documented_public_objects(
    objects: list[stdlib.DocObject],
) -> None:
    by_name = {o.qualname: o for o in objects}
    assert list(by_name) == [
        "things",
        "things.Widget",
        "things.Widget.frob",
        "things.Widget.make",
        "things.helper",
    ]
    assert by_name["things"].data == (("MAX_THINGS", "10"),)
    widget = by_name["things.Widget"]
    assert widget.heading() == "class things.Widget(size, *, color='red')"
    assert widget.params == ("size", "color")
    frob = by_name["things.Widget.frob"]
    assert frob.heading() == "things.Widget.frob(times=1)"  # self is not shown
    assert [(r.exception, r.message, r.literal) for r in frob.raises] == [
        ("ValueError", "times must not be negative", True),
        ("RuntimeError", "cannot frob {times} times", False),
    ]
    make = by_name["things.Widget.make"]
    assert make.heading() == "things.Widget.make(kind)"  # a static method keeps its first one
    assert [(r.message, r.literal) for r in make.raises] == [("unknown kind: %s", False)]
    assert by_name["things.helper"].raises == ()  # the nested function's raise is its own


def test_a_row_holds_heading_doc_raises_and_constants(objects: list[stdlib.DocObject]) -> None:
    module, _, frob, _, _ = objects
    assert module.text() == (
        "module things\n\nA module for tests.\n\nIt has a second paragraph.\n\n"
        "Data:\nMAX_THINGS = 10"
    )
    assert module.summary() == "module things\n\nA module for tests."
    assert frob.text().endswith(
        "Raises ValueError: times must not be negative\n"
        "Raises RuntimeError: cannot frob {times} times"
    )


def test_a_page_holds_each_object_at_its_section(objects: list[stdlib.DocObject]) -> None:
    (page,) = stdlib.pages(objects)
    assert page.text.startswith("# module things\n\n")
    assert "\n\n## class things.Widget(" in page.text
    for obj in objects:
        start, end = page.sections[obj.qualname]
        assert page.text[start:end] == obj.text()


def test_anchors_are_found_in_the_object_text(objects: list[stdlib.DocObject]) -> None:
    module, widget, frob, _, _ = objects
    text = frob.text()
    start, end = labels.needle(frob, "raise:ValueError: times must not be negative")
    assert text[start:end] == "Raises ValueError: times must not be negative"
    start, end = labels.needle(module, "data:MAX_THINGS")
    assert module.text()[start:end] == "MAX_THINGS = 10"
    start, end = labels.needle(widget, "mention:frobs")
    assert widget.text()[start:end] == "frobs"
    with pytest.raises(ValueError, match="is not in the text"):
        labels.needle(frob, "raise:KeyError: no such message")


def test_a_label_lands_on_the_chunk_holding_most_of_its_text() -> None:
    chunks = [ChunkSpan(0, "m", 0, 100), ChunkSpan(1, "m", 80, 200), ChunkSpan(2, "m", 200, 300)]
    assert labels.holding(chunks, 10, 20).id == 0
    assert labels.holding(chunks, 85, 95).id == 0  # wholly in both (the overlap): the first
    assert labels.holding(chunks, 90, 150).id == 1  # mostly in the second
    assert labels.holding(chunks, 190, 260).id == 2
    with pytest.raises(ValueError):
        labels.holding(chunks, 300, 310)


def test_objects_with_the_same_docstring_answer_the_same_paraphrase() -> None:
    def obj(name: str, doc: str) -> stdlib.DocObject:
        return stdlib.DocObject(name, name.split(".", maxsplit=1)[0], "function", "()", (), doc)

    same = labels.equivalents(
        [obj("posixpath.join", "Join paths."), obj("ntpath.join", "Join paths."), obj("a.b", "x")]
    )
    assert same == {"posixpath.join": ["ntpath.join"], "ntpath.join": ["posixpath.join"]}
    paraphrase = Query(
        "p", "paraphrase", "paraphrase", "glue paths", (Judgement("posixpath.join", "summary", 2),)
    )
    assert labels.expanded(paraphrase, same) == [
        Judgement("posixpath.join", "summary", 2),
        Judgement("ntpath.join", "summary", 2),
    ]
    exact = Query("e", "exact", "name", "join", (Judgement("posixpath.join", "heading", 2),))
    assert labels.expanded(exact, same) == list(exact.relevant)  # a name names one object


def test_reciprocal_rank_fusion_by_hand() -> None:
    # a: 1/61 + 1/62; b: 1/62 + 1/61 (a tie, broken by id); c: 1/63; d: 1/61.
    assert rrf([[1, 2, 3], [2, 1]], rrf_k=60) == [1, 2, 3]
    assert rrf([[3, 1], [4]], rrf_k=60) == [3, 4, 1]
    assert rrf([[1], [2]], weights=(1.0, 2.0)) == [2, 1]


# The committed query files, against the standard library of the Python that runs the tests.

QUERIES = labels.load()
PYTHON = {json.loads(p.read_text())["python"] for p in labels.QUERY_FILES}


def test_the_query_set_has_enough_of_each_type() -> None:
    assert len({q.id for q in QUERIES}) == len(QUERIES)
    assert len({q.text for q in QUERIES}) == len(QUERIES)
    assert sum(q.type == "exact" for q in QUERIES) >= 60
    assert sum(q.type == "paraphrase" for q in QUERIES) >= 60
    assert all(any(j.grade == 2 for j in q.relevant) for q in QUERIES)


def _name_words(qualname: str) -> set[str]:
    """The words of an object's own name: shutil.rmtree -> {rmtree}; Counter.most_common ->
    {most, common}; OrderedDict.move_to_end -> {move, end}."""
    name = qualname.rsplit(".", 1)[-1]
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", name)
    return {w.lower() for w in [name, *words] if len(w) >= 4}


def test_paraphrases_do_not_name_the_object_they_describe() -> None:
    for q in QUERIES:
        if q.type != "paraphrase":
            continue
        words = set(re.findall(r"[a-z0-9_]+", q.text.lower()))
        for j in q.relevant:
            # The object the query was written from; another that also answers it (grade 1)
            # may share a word (JSON with json.decoder.JSONDecoder).
            if j.grade == 2:
                assert not _name_words(j.object) & words, (q.id, j.object)


@pytest.mark.slow
@pytest.mark.skipif(
    {sys.version.split()[0]} != PYTHON, reason=f"the query files were made with Python {PYTHON}"
)
def test_every_label_resolves_and_exact_json_is_what_the_generator_writes() -> None:
    objects = stdlib.objects()
    by_name = {o.qualname: o for o in objects}
    for q in QUERIES:
        for j in q.relevant:
            labels.needle(by_name[j.object], j.anchor)
    committed = [q for q in QUERIES if q.type == "exact"]
    assert generate.build() == committed

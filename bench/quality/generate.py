"""Writes bench/quality/exact.json: exact-term queries drawn from the standard library's source
structure (`python -m bench.quality.generate`; deterministic for one Python version).

Four kinds, each drawn with a fixed seed, at most one query per module (so that no large module,
tkinter's hundreds of methods, dominates), and each judged by construction:
- name: a function, class or method name that no other object in the corpus bears;
  relevant: that object (grade 2, its heading) and the objects whose docstring mentions the
  name (grade 1);
- parameter: a parameter name (with an underscore, so an identifier rather than a word) found in
  the signatures of at most 3 objects; relevant: those objects (grade 2) and docstrings that
  mention it (grade 1);
- error: a plain-literal exception message of at least 4 words that at most 3 objects raise,
  queried as a user would paste it (`ValueError: ...`); relevant: those objects (grade 2, the
  `Raises` line);
- constant: a module constant (NAME with an underscore) defined by at most 2 modules;
  relevant: those modules (grade 2, the `NAME = value` line) and docstrings that mention it
  (grade 1).
Candidates mentioned by more than `MAX_MENTIONS` docstrings are skipped: an identifier that
common is a word of the library rather than the name of one thing.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from bench.quality import labels
from bench.quality.labels import Judgement, Query
from bench.quality.stdlib import DocObject, objects

COUNTS = {"name": 25, "parameter": 20, "error": 25, "constant": 15}
MAX_MENTIONS = 4
MAX_DEFINERS = {"parameter": 3, "error": 3, "constant": 2}
SEED = 26
WORD = re.compile(r"\w+")
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+")


class Mentions:
    """Which docstrings name an identifier, as a whole word: an index of every docstring's
    words (an identifier is one run of word characters, so a word lookup is the same test
    as `labels.word`'s regular expression, for all candidates at once)."""

    def __init__(self, items: Iterable[DocObject]) -> None:
        self.index: dict[str, list[str]] = defaultdict(list)
        for obj in items:
            for word in dict.fromkeys(WORD.findall(obj.doc)):
                self.index[word].append(obj.qualname)

    def __call__(self, identifier: str, definers: set[str]) -> list[str] | None:
        """Objects (other than the definers) whose docstring names `identifier`; None if
        more than `MAX_MENTIONS` do."""
        found = [name for name in self.index.get(identifier, []) if name not in definers]
        return found if len(found) <= MAX_MENTIONS else None


def judged(
    definers: list[tuple[str, str]], mentioned: list[str], identifier: str
) -> tuple[Judgement, ...]:
    return tuple(Judgement(name, anchor, 2) for name, anchor in definers) + tuple(
        Judgement(name, f"mention:{identifier}", 1) for name in mentioned
    )


def names(items: list[DocObject]) -> Iterator[tuple[str, str, tuple[Judgement, ...]]]:
    mentions = Mentions(items)
    counts: dict[str, int] = defaultdict(int)
    for obj in items:
        counts[obj.name] += 1
    for obj in items:
        if obj.kind == "module" or counts[obj.name] > 1 or not IDENTIFIER.fullmatch(obj.name):
            continue
        mentioned = mentions(obj.name, {obj.qualname})
        if mentioned is not None:
            yield obj.module, obj.name, judged([(obj.qualname, "heading")], mentioned, obj.name)


def parameters(items: list[DocObject]) -> Iterator[tuple[str, str, tuple[Judgement, ...]]]:
    mentions = Mentions(items)
    defined: dict[str, list[DocObject]] = defaultdict(list)
    for obj in items:
        for param in dict.fromkeys(obj.params):
            defined[param].append(obj)
    taken = {obj.name for obj in items}
    for param, definers in defined.items():
        if "_" not in param.strip("_") or param in taken or param.startswith("_"):
            continue
        if not IDENTIFIER.fullmatch(param) or len(definers) > MAX_DEFINERS["parameter"]:
            continue
        names_ = {o.qualname for o in definers}
        mentioned = mentions(param, names_)
        if mentioned is not None:
            pairs = [(o.qualname, "heading") for o in definers]
            yield definers[0].module, param, judged(pairs, mentioned, param)


def errors(items: list[DocObject]) -> Iterator[tuple[str, str, tuple[Judgement, ...]]]:
    raised: dict[str, list[tuple[DocObject, str]]] = defaultdict(list)
    for obj in items:
        for r in obj.raises:
            raised[r.message].append((obj, r.exception))
    for message, definers in raised.items():
        if len({o.qualname for o, _ in definers}) > MAX_DEFINERS["error"]:
            continue
        if len(message) < 20 or len(message.split()) < 4:
            continue
        literal = all(r.literal for o, _ in definers for r in o.raises if r.message == message)
        if not literal:
            continue
        obj, exception = definers[0]
        pairs = [(o.qualname, f"raise:{e}: {message}") for o, e in definers]
        yield obj.module, f"{exception.rsplit('.', 1)[-1]}: {message}", judged(pairs, [], "")


def constants(items: list[DocObject]) -> Iterator[tuple[str, str, tuple[Judgement, ...]]]:
    mentions = Mentions(items)
    defined: dict[str, list[DocObject]] = defaultdict(list)
    for obj in items:
        for name, _ in obj.data:
            defined[name].append(obj)
    for name, definers in defined.items():
        if "_" not in name or len(definers) > MAX_DEFINERS["constant"]:
            continue
        names_ = {o.qualname for o in definers}
        mentioned = mentions(name, names_)
        if mentioned is not None:
            pairs = [(o.qualname, f"data:{name}") for o in definers]
            yield definers[0].module, name, judged(pairs, mentioned, name)


KINDS: dict[str, Callable[[list[DocObject]], Iterator[tuple[str, str, tuple[Judgement, ...]]]]] = {
    "name": names,
    "parameter": parameters,
    "error": errors,
    "constant": constants,
}


def draw(kind: str, items: list[DocObject], count: int, seed: int) -> list[Query]:
    candidates = sorted(KINDS[kind](items), key=lambda c: (c[0], c[1]))
    random.Random(f"{seed}-{kind}").shuffle(candidates)
    chosen: list[Query] = []
    modules: set[str] = set()
    texts: set[str] = set()
    for module, text, relevant in candidates:
        if module in modules or text in texts:
            continue
        modules.add(module)
        texts.add(text)
        chosen.append(Query(f"{kind}-{len(chosen) + 1:03d}", "exact", kind, text, relevant))
        if len(chosen) == count:
            break
    return chosen


def build(seed: int = SEED) -> list[Query]:
    items = list(objects())
    return [q for kind, count in COUNTS.items() for q in draw(kind, items, count, seed)]


def main() -> None:
    queries = build()
    document = {
        "about": "Generated by `python -m bench.quality.generate` (see its docstring).",
        "python": sys.version.split()[0],
        "seed": SEED,
        "queries": [q.to_json() for q in queries],
    }
    path = labels.HERE / "exact.json"
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(queries)} queries to {path}")


if __name__ == "__main__":
    main()

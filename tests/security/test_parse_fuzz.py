"""Every extractor fuzzed through the parse service (worker/pipeline/parsing/), one property:
whatever the bytes, the parse ends as a document or as that row's failure (the bytes'
DocumentError, or a budget's or a crash's ParseFailed), within its budget; and a document that
comes back keeps every bound (the wire checked it).

The bytes are a real file of the format, mutated (bytes flipped, inserted, deleted, repeated,
the file cut), or any bytes at all. `make test` runs a fixed (derandomized) set of
FUZZ_EXAMPLES examples per format, a few seconds each; `make fuzz` explores many more with a
fresh seed each time:

    make fuzz                     # EMBED_FUZZ_EXAMPLES=2000 (FUZZ_EXAMPLES=N to choose)
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.documents import docx_bytes, pdf_bytes
from worker import exceptions
from worker.pipeline.documents import extracted
from worker.pipeline.documents.detection import FORMATS
from worker.pipeline.documents.extracted import ExtractedDocument
from worker.pipeline.parsing.budgets import MIB, Budget
from worker.pipeline.parsing.process import Parse
from worker.pipeline.parsing.service import ParseService

EXAMPLES = int(os.environ.get("EMBED_FUZZ_EXAMPLES", "50"))
SOAK = "EMBED_FUZZ_EXAMPLES" in os.environ  # `make fuzz`: a fresh seed
BUDGET = Budget(seconds=2.0, cpu_seconds=1, memory_bytes=64 * MIB)
# Past the budget: a process killed at it is replaced before the next parse starts.
SLACK_SECONDS = 5.0
DETECTED = "auto"

SEEDS: dict[str, bytes] = {
    "pdf": pdf_bytes([["Refunds take fourteen days.", "(Ask the desk.)"], ["Page 2."]], title="T"),
    "docx": docx_bytes(
        [
            ("Title", "Handbook"),
            ("Heading 1", "Refunds"),
            ("Normal", "Fourteen days."),
            ("table", "a|b;c|d"),
        ],
        title="IT",
    ),
    "html": (
        b"<!DOCTYPE html><html><head><title>T</title><style>p{}</style></head><body>"
        b"<h1>Refunds</h1><p>Fourteen &amp; days.</p><svg><text>x</text></svg>"
        b"<h2>More</h2><pre>  kept  </pre><table><tr><td>a</td></tr></table></body></html>"
    ),
    "markdown": b"# Help\n\nIntro.\n\n## Refunds\n\n14 days.\n\nSetext\n===\n\n```\n# not\n```\n",
    "text": "Plain text, caf\u00e9, \u4e2d\u6587.\n".encode(),
}


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["flip", "insert", "delete", "repeat", "cut"])):
            case "flip" if at < len(data):
                data[at] ^= draw(st.integers(1, 255))
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            case "delete":
                del data[at : at + draw(st.integers(1, 64))]
            case "repeat":
                piece = bytes(data[at : at + draw(st.integers(1, 32))])
                data[at:at] = piece * draw(st.integers(1, 2000))
            case "cut":
                del data[at:]
    return bytes(data)


def inputs(format: str) -> st.SearchStrategy[bytes]:
    seeds = list(SEEDS.values()) if format == DETECTED else [SEEDS[format]]
    return st.one_of(*(mutated(seed) for seed in seeds), st.binary(max_size=4096))


@pytest.fixture(scope="module")
def service() -> Iterator[ParseService]:
    found = ParseService()
    yield found
    found.close()


def check_bounds(document: ExtractedDocument) -> None:
    assert document.title is None or len(document.title) <= extracted.MAX_TITLE
    assert (
        1 <= len(document.sections) <= extracted.MAX_SECTIONS
        and len(document.pages) <= extracted.MAX_PAGES
    )
    for section in document.sections:
        assert 0 <= section.start <= section.end <= len(document.text)
        assert len(section.headings) <= extracted.MAX_DEPTH
        assert all(0 < len(h) <= extracted.MAX_HEADING for h in section.headings)


@pytest.mark.parametrize("format", [*FORMATS, DETECTED])
def test_whatever_the_bytes_a_parse_ends_as_a_document_or_its_rows_failure(
    format: str, service: ParseService
) -> None:
    parsed = 0

    @given(inputs(format))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not SOAK,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    def one_parse(data: bytes) -> None:
        nonlocal parsed
        parsed += 1
        content = base64.b64encode(data).decode()
        key = ("fuzz", 1, 1, f"{format}-{parsed}", hashlib.md5(data).hexdigest())
        job = Parse(content, None if format == DETECTED else format, True, 4 * MIB, BUDGET)
        assert service.submit(key, job, processes=1)
        service.wait([key], time.monotonic() + BUDGET.seconds + SLACK_SECONDS)
        outcome = service.take(key)
        assert outcome is not None, f"{len(data)} bytes: no outcome within the budget"
        if isinstance(outcome, ExtractedDocument):
            check_bounds(outcome)
        else:
            assert isinstance(outcome, exceptions.DocumentError | exceptions.ParseFailed)
            assert str(outcome)

    one_parse()

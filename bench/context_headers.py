"""Context headers (worker/pipeline/documents/headers.py): what putting a chunk's title and
heading path in front of it buys in retrieval, on sections that mean nothing without their
heading ("## Refunds\\nIt takes 14 days.").

One Markdown help-centre page of 30 short sections (bench/context_headers.json); 30 questions,
one per section, that name the section's subject but share almost no word with its body. Each
question's answer is its section's chunk. Ranked by cosine similarity with the real
all-MiniLM-L6-v2, recall@1 and @5 of:
- `body`: the section chunks as stored, embedded as they are (what a heading-aware split
  without a header embeds; HTML and DOCX chunks hold no heading line at all);
- `heading_line`: each section's own Markdown, heading line and body ("## Refunds\\nIt takes 14
  days."): what today's Splitter makes of a section long enough to be a chunk of its own;
- `header`: the section chunks with the default context header in front ("Help centre\\n<heading>");
- `splitter`: today's Splitter over the whole page (chunks start at a heading, so they hold its
  line, but several short sections share a chunk); a hit is a chunk that holds the section.
  Here 30 sections make 4 such chunks: its recall@5 is 1 by construction.

Run: `python -m bench.context_headers [MODEL_DIR]` (default: all-MiniLM-L6-v2 in
EMBED_TEST_MODELS, else in ../shared/models beside the checkout).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import machine
from worker.models import onnx
from worker.models.embedder import Embedder
from worker.pipeline.chunking import Splitter
from worker.pipeline.documents.extraction import extract
from worker.pipeline.documents.splitting import DocumentSplitter

CHUNK_TOKENS = 128

# (heading, body, question): the body alone does not say what it is about.
SECTIONS = [
    (s["heading"], s["body"], s["question"])
    for s in json.loads((Path(__file__).parent / "context_headers.json").read_text())
]


def page() -> str:
    return "# Help centre\n\n" + "".join(f"## {h}\n{body}\n\n" for h, body, _ in SECTIONS)


def recall(
    questions: npt.NDArray[np.float32], chunks: npt.NDArray[np.float32], right: list[set[int]]
) -> dict[str, float]:
    """recall@1 and @5: the share of questions with a right chunk among the k nearest."""
    ranked = np.argsort(-(questions @ chunks.T), axis=1)
    return {
        f"recall@{k}": float(
            np.mean([bool(set(ranked[q, :k]) & right[q]) for q in range(len(right))])
        )
        for k in (1, 5)
    }


def run(model_dir: Path) -> dict[str, object]:
    embedder = Embedder.load(model_dir)
    tokenizer_file = model_dir / "tokenizer.json"
    text = page()
    document = extract(text, format="markdown", max_bytes=0)
    tokenizer = onnx.load_tokenizer(tokenizer_file, max_tokens=None)
    splitter = DocumentSplitter(tokenizer, CHUNK_TOKENS, 0)
    chunks = splitter.split(document)
    assert len(chunks) == len(SECTIONS), "one chunk per section"
    questions = embedder.embed([q for _, _, q in SECTIONS])
    right = [{i} for i in range(len(SECTIONS))]
    results: dict[str, object] = {
        "body": recall(questions, embedder.embed([c.chunk.text for c in chunks]), right),
        "heading_line": recall(
            questions, embedder.embed([f"## {h}\n{body}" for h, body, _ in SECTIONS]), right
        ),
        "header": recall(questions, embedder.embed([c.embedding_input for c in chunks]), right),
    }
    whole = Splitter(tokenizer, CHUNK_TOKENS, 0).split(text)
    holding = [
        {i for i, w in enumerate(whole) if w.start <= c.chunk.start and c.chunk.end <= w.end}
        for c in chunks
    ]
    results["splitter"] = recall(questions, embedder.embed([w.text for w in whole]), holding)
    results["splitter_chunks"] = len(whole)
    results["sections"] = len(SECTIONS)
    results["model"] = model_dir.name
    results["machine"] = machine.describe()
    return results


def main() -> None:
    models = os.environ.get("EMBED_TEST_MODELS") or Path(__file__).parents[2] / "shared" / "models"
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(models) / "all-MiniLM-L6-v2"
    results = run(model_dir)
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results" / "context_headers.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Counting and truncating tokens for a remote model, whose tokenizer we may not have.

With a tokenizer (the model row's `tokenizer`: a local model's name, or a tokenizer.json),
counts are exact and an input is cut at exactly `max_tokens`. Without one, tokens are
estimated from the UTF-8 length: one token per BYTES_PER_TOKEN bytes, rounded up. BPE tokenizers
(OpenAI's cl100k, most modern ones) average about 4 bytes per token on English text and 1-3 on
other scripts and code, WordPiece about 4-5 on English: dividing by 3 over-counts English text
by about a third, so an input is cut early rather than refused, and request budgets hold with a
margin. The provider's own `usage.total_tokens` is what the metrics count where it answers one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from worker.models import onnx

BYTES_PER_TOKEN = 3
SPECIAL_TOKENS = 2  # [CLS] and [SEP] (or <s> and </s>) that an exact count includes


class TokenCounter(Protocol):
    exact: bool

    def fit(self, text: str, max_tokens: int) -> tuple[str, int]:
        """`text` cut to at most `max_tokens` tokens, and its token count."""
        ...


class EstimatedTokens:
    """Tokens estimated from the UTF-8 length (see the module's docstring)."""

    exact = False

    def fit(self, text: str, max_tokens: int) -> tuple[str, int]:
        data = text.encode("utf-8")
        tokens = math.ceil(len(data) / BYTES_PER_TOKEN)
        if tokens <= max_tokens:
            return text, max(tokens, 1)
        cut = data[: max_tokens * BYTES_PER_TOKEN].decode("utf-8", errors="ignore")
        # At the last whitespace of the kept part when there is one near the end: a word cut in
        # half becomes tokens that were not in the text.
        space = max(cut.rfind(" "), cut.rfind("\n"))
        if space > len(cut) * 0.9:
            cut = cut[:space]
        return cut, math.ceil(len(cut.encode("utf-8")) / BYTES_PER_TOKEN)


class ExactTokens:
    """Tokens of a real tokenizer (tokenizer.json), special tokens included."""

    exact = True

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, tokenizer_json: Path) -> ExactTokens:
        return cls(onnx.load_tokenizer(tokenizer_json, max_tokens=None))

    def fit(self, text: str, max_tokens: int) -> tuple[str, int]:
        encoding = self._tokenizer.encode(text)
        if len(encoding.ids) <= max_tokens:
            return text, len(encoding.ids)
        kept = [
            end
            for (_, end), special in zip(
                encoding.offsets, encoding.special_tokens_mask, strict=True
            )
            if not special
        ][: max(max_tokens - SPECIAL_TOKENS, 1)]
        cut = text[: kept[-1]] if kept else text[: max_tokens * BYTES_PER_TOKEN]
        return cut, min(len(self._tokenizer.encode(cut).ids), max_tokens)

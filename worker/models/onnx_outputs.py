"""The outputs an ONNX file declares, read from its protobuf without loading it: for `model
list`, which shows the dimensions a model directory produces without building a session (that
reads every weight: seconds and hundreds of MB a model).

An ONNX file is a ModelProto whose field 7 is the graph; the graph's field 12 holds its outputs
(ValueInfoProto: name 1, type 2 -> tensor_type 1 -> shape 2 -> dim 1 -> dim_value 1 or
dim_param 2). Everything else (nodes, initializers: the weights) is stepped over by its
length, so a file of 130 MB costs a few hundred small reads. Anything unexpected (not ONNX, cut
short, an output without a tensor shape) is None: unknown, never a guess.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

Shape = tuple[int | None, ...]  # None: a symbolic dimension (batch, sequence)

MAX_FIELDS = 1_000_000  # a graph of real models has a few thousand; past this, not ONNX
MAX_OUTPUT_BYTES = 1 << 20


class _NotOnnx(Exception):
    pass


def outputs(path: Path) -> dict[str, Shape] | None:
    """The graph's outputs by name, each with its declared shape; None when `path` cannot be
    read as an ONNX model."""
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            for number, value in _fields(f, size):
                if number == 7 and isinstance(value, tuple):
                    return _graph_outputs(f, *value)
    except (OSError, _NotOnnx):
        return None
    return None


def hidden_dim(shapes: dict[str, Shape]) -> int | None:
    """The vectors' dimensions by the embedder's rule (worker/models/onnx.py:
    hidden_state_output, output_dim): the last dimension of `last_hidden_state`, else of the
    first (batch, tokens, hidden) output, when it is a number."""
    chosen = shapes.get("last_hidden_state") or next(
        (shape for shape in shapes.values() if len(shape) == 3), None
    )
    if chosen is None or len(chosen) != 3:
        return None
    return chosen[-1]


def _graph_outputs(f: BinaryIO, start: int, length: int) -> dict[str, Shape]:
    f.seek(start)
    found: dict[str, Shape] = {}
    for number, value in _fields(f, start + length):
        if number == 12 and isinstance(value, tuple):
            if value[1] > MAX_OUTPUT_BYTES:
                raise _NotOnnx
            f.seek(value[0])
            name, shape = _value_info(f.read(value[1]))
            if shape is not None:
                found[name] = shape
    return found


def _value_info(data: bytes) -> tuple[str, Shape | None]:
    name, shape = "", None
    for number, value in _message(data):
        if number == 1 and isinstance(value, bytes):
            name = value.decode("utf-8", "replace")
        elif number == 2 and isinstance(value, bytes):  # TypeProto
            for n, tensor in _message(value):
                if n == 1 and isinstance(tensor, bytes):  # tensor_type
                    for m, dims in _message(tensor):
                        if m == 2 and isinstance(dims, bytes):  # shape
                            shape = tuple(
                                _dimension(d)
                                for k, d in _message(dims)
                                if k == 1 and isinstance(d, bytes)
                            )
    return name, shape


def _dimension(data: bytes) -> int | None:
    for number, value in _message(data):
        if number == 1 and isinstance(value, int):
            return value if 0 < value < 1 << 31 else None  # (a negative int64: 10 bytes)
    return None  # dim_param: a name, such as batch


def _message(data: bytes) -> list[tuple[int, int | bytes]]:
    """The fields of a small message held in memory: varints as ints, the others as bytes."""
    f = io.BytesIO(data)
    found: list[tuple[int, int | bytes]] = []
    for number, value in _fields(f, len(data)):
        if isinstance(value, tuple):
            f.seek(value[0])
            found.append((number, f.read(value[1])))
            f.seek(value[0] + value[1])
        else:
            found.append((number, value))
    return found


def _fields(f: BinaryIO, end: int) -> Iterator[tuple[int, int | tuple[int, int]]]:
    """(field number, value) of the message from f's position to `end`: a varint's value, or a
    length-delimited field's (start, length), the reader left at its end after each."""
    count = 0
    while f.tell() < end:
        count += 1
        if count > MAX_FIELDS:
            raise _NotOnnx
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, _varint(f)
        elif wire == 1:
            f.seek(8, io.SEEK_CUR)
        elif wire == 5:
            f.seek(4, io.SEEK_CUR)
        elif wire == 2:
            length = _varint(f)
            start = f.tell()
            if start + length > end:
                raise _NotOnnx
            yield number, (start, length)
            f.seek(start + length)
        else:
            raise _NotOnnx
    if f.tell() != end:
        raise _NotOnnx


def _varint(f: BinaryIO) -> int:
    result = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise _NotOnnx
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _NotOnnx

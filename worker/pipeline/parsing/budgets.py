"""What one parse may spend: wall time, CPU time and memory.

The settings cap each (EMBED_PARSE_TIMEOUT_SECONDS, EMBED_PARSE_CPU_SECONDS, EMBED_PARSE_MEMORY_MB);
time is also bounded by the input's size, BASE_SECONDS plus SECONDS_PER_MIB per MiB of it, so
that a small file cannot take a large file's time: parse time per input byte is bounded."""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE_SECONDS = 5.0
SECONDS_PER_MIB = 10.0
MIB = 2**20


@dataclass(frozen=True)
class Budget:
    """One parse's budget: the parent kills the process past `seconds`; the process itself
    cannot use more than `cpu_seconds` of CPU or `memory_bytes` of memory (rlimits)."""

    seconds: float
    cpu_seconds: int
    memory_bytes: int

    @property
    def memory_mib(self) -> int:
        return self.memory_bytes // MIB


@dataclass(frozen=True)
class Budgets:
    """The settings of the parse processes."""

    timeout_seconds: float = 30.0
    cpu_seconds: int = 20
    memory_mb: int = 96
    processes: int = 2

    def for_size(self, size: int) -> Budget:
        """The budget of a parse of `size` input bytes."""
        scaled = BASE_SECONDS + SECONDS_PER_MIB * size / MIB
        return Budget(
            seconds=min(self.timeout_seconds, scaled),
            cpu_seconds=max(1, math.ceil(min(self.cpu_seconds, scaled))),
            memory_bytes=self.memory_mb * MIB,
        )

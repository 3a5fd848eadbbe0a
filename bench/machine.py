"""The machine a benchmark ran on, recorded beside its results (figures from different machines,
or from one machine on different days, are not comparable)."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The instruction sets that decide inference speed (fp32 vs int8 kernels): AVX2, AVX-512 and
# whether it has VNNI (avx512_vnni, avx_vnni), AMX. The one place a bench reads them: every
# section's results carry them under "machine" (bench/__main__.py).
SIMD = re.compile(r"avx\w*|fma|amx\w*|\w*vnni\w*")


def cpu_model_and_flags(cpuinfo: str) -> tuple[str, list[str]]:
    """The first processor's model name and SIMD flags, from the text of /proc/cpuinfo."""
    cpu = "unknown"
    flags: list[str] = []
    for line in cpuinfo.splitlines():
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = [f for f in line.split(":", 1)[1].split() if SIMD.fullmatch(f)]
    return cpu, flags


def describe() -> dict[str, Any]:
    try:
        cpu, flags = cpu_model_and_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu, flags = "unknown", []
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }

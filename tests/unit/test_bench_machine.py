"""The CPU flags every bench records (bench/machine.py): VNNI and the other AVX-512 extensions
whose flags have an underscore are seen, and no other bench module reads /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

from bench.machine import cpu_model_and_flags

BENCH = Path(__file__).resolve().parents[2] / "bench"

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl \
avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni avx_vnni amx_tile sha_ni
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu
"""


def test_flags_with_underscores_are_recorded() -> None:
    cpu, flags = cpu_model_and_flags(CPUINFO)
    assert cpu == "AMD EPYC 9R14"
    assert flags == [
        "fma",
        "avx",
        "avx2",
        "avx512f",
        "avx512dq",
        "avx512ifma",
        "avx512cd",
        "avx512bw",
        "avx512vl",
        "avx512_bf16",
        "avx512vbmi",
        "avx512_vbmi2",
        "avx512_vnni",
        "avx_vnni",
        "amx_tile",
    ]


def test_only_the_machine_module_reads_cpu_flags() -> None:
    readers = sorted(
        str(p.relative_to(BENCH)) for p in BENCH.rglob("*.py") if "/proc/cpuinfo" in p.read_text()
    )
    assert readers == ["machine.py"]

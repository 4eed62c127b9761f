"""What this CPU can do, read once: the one place kernel and dtype choices ask.

Which int8 kernel is exact and whether bf16 is fast both depend on the instruction set, and
machines of one fleet differ (AVX-512 with VNNI/AMX on some, AVX2 only on others).
BIOGPT_CPU_FLAGS="avx2 fma" overrides the answer so tests can run every CPU's path anywhere.
"""
from __future__ import annotations

import functools
import os

FLAGS_ENV = "BIOGPT_CPU_FLAGS"


@functools.lru_cache(maxsize=None)
def _cpuinfo_field(name: str) -> str:
    """The first processor's `name` line of /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:  # not Linux: claim nothing, so callers take their safe path
        pass
    return ""


def _cpuinfo_flags() -> frozenset[str]:
    return frozenset(_cpuinfo_field("flags").split())


def cpu_model() -> str:
    """The CPU's name, e.g. "AMD EPYC" (for benchmark reports; nothing decides on it)."""
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (as /proc/cpuinfo spells them), or the override's."""
    override = os.environ.get(FLAGS_ENV)
    if override is not None:  # read each call so a test's monkeypatch takes effect at once
        return frozenset(override.split())
    return _cpuinfo_flags()


def fast_bf16() -> bool:
    """Whether bf16 matmuls run well here: AVX-512 (oneDNN's bf16 kernels need at least
    avx512f; avx512_bf16 and AMX run them natively). On AVX2 alone bf16 prefills about 5x
    slower than fp32 (measured on an AMD EPYC, issue 13)."""
    return bool(cpu_flags() & {"avx512f", "avx512_bf16", "amx_bf16"})

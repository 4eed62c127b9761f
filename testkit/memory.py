"""A process's resident memory, for the memory tests and the soak benchmark alike."""

from __future__ import annotations


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (this one by default) in MB, as the kernel counts it."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

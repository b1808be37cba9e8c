"""Resources of agent + ExaBGP: peak RSS and CPU seconds with N routes, and idle CPU.

``probe`` runs while the receiving agent holds every benchmark route. It reads
``VmHWM`` (peak resident set) and ``utime + stime`` from ``/proc`` for the agent and
its descendants (ExaBGP and the relay), then samples their CPU time again after
``IDLE_SECONDS`` with no BGP changes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

IDLE_SECONDS = 60.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds of ``pid`` (all its threads)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80].strip()


def probe(receiver, lab) -> dict:
    """Return peak RSS and CPU of the receiver's processes now and after an idle minute."""
    pids = receiver.pids()
    processes = {pid: {"command": command(pid), "peak_rss_mb": round(peak_rss_mb(pid), 1),
                       "cpu_seconds": round(cpu_seconds(pid), 2)} for pid in pids}
    before = {pid: cpu_seconds(pid) for pid in pids}
    time.sleep(IDLE_SECONDS)
    for pid in pids:
        processes[pid]["idle_cpu_seconds"] = round(cpu_seconds(pid) - before[pid], 3)
    idle = sum(p["idle_cpu_seconds"] for p in processes.values())
    return {
        "routes_held": receiver.held(),
        "processes": list(processes.values()),
        "peak_rss_mb_total": round(sum(p["peak_rss_mb"] for p in processes.values()), 1),
        "cpu_seconds_total": round(sum(p["cpu_seconds"] for p in processes.values()), 2),
        "idle_seconds": IDLE_SECONDS,
        "idle_cpu_seconds": round(idle, 3),
        "idle_cpu_percent": round(100 * idle / IDLE_SECONDS, 2),
    }

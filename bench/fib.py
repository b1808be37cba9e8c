"""Count the prefixes in a namespace's main IPv4 FIB and wait for a count.

The count is the ``Prefixes:`` line of the ``Main:`` section of
``/proc/net/fib_triestat``, read through ``/proc/PID/net`` of a process inside the
namespace, so polling starts no process. The kernel counts every prefix of the
main table there (and, when the main and local tables share one trie, the local
routes too), so callers compare against a baseline taken before a run.
"""

from __future__ import annotations

import time
from pathlib import Path

POLL_SECONDS = 0.005


def count_prefixes(path: Path) -> int:
    """Return the number of prefixes in the ``Main:`` trie of ``path``."""
    in_main = False
    for line in path.read_text().splitlines():
        if line.startswith("Main:"):
            in_main = True
        elif in_main and line.strip().startswith("Prefixes:"):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no 'Prefixes:' line in the Main section")


def wait_for_count(read, target: int, timeout: float) -> float:
    """Poll ``read()`` until it returns ``target``; return the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        value = read()
        if value == target:
            return now
        if now > deadline:
            raise TimeoutError(f"count is {value}, expected {target}, after {timeout:.0f} s")
        time.sleep(POLL_SECONDS)

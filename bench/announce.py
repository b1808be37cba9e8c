"""Time announce -> FIB and withdraw -> FIB for one receiver and one prefix set.

One ``Lab`` per receiver: the source BIRD and the receiver start, the session comes
up, and then each repetition announces all N prefixes (``birdc enable bulk``) and
waits until the receiver holds N, then withdraws them (``birdc disable bulk``) and
waits until it holds none. Each time runs from just before the ``birdc`` command to
the first poll that sees the final count, so it includes BGP transfer, the
receiver's processing and the kernel's FIB updates.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import fib
from bench.daemons import RECEIVERS, Source
from bench.netns import Lab

log = logging.getLogger("bench")

SETTLE_SECONDS = 1.0  # after Established, for the initial UPDATEs and End-of-RIB to pass
# Generous bounds for one announce or withdraw: about 50 us per prefix as measured
# for the slowest receiver on a 2-core VM, times 20, plus start-up.
TIMEOUT_BASE = 30.0
TIMEOUT_PER_PREFIX = 0.001


@dataclass
class Timings:
    announce: list[float] = field(default_factory=list)
    withdraw: list[float] = field(default_factory=list)
    usage: dict = field(default_factory=dict)


def measure(receiver_name: str, count: int, length: int, repeats: int,
            probe=None, keep_dir: Path | None = None) -> Timings:
    """Run ``repeats`` announce/withdraw cycles; ``probe(receiver, lab)`` runs while N are held."""
    timeout = TIMEOUT_BASE + TIMEOUT_PER_PREFIX * count
    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="bgpnet-bench-") as temp, Lab() as lab:
        workdir = keep_dir or Path(temp)
        workdir.chmod(0o755)  # FRR drops to the frr user, which must reach its directory
        source = Source(lab, workdir, count, length)
        receiver = RECEIVERS[receiver_name](lab, workdir)
        receiver.start()
        source.wait_established()
        time.sleep(SETTLE_SECONDS)
        receiver.settle()
        for repeat in range(repeats):
            started = time.monotonic()
            source.announce()
            timings.announce.append(fib.wait_for_count(receiver.held, count, timeout) - started)
            if probe is not None and repeat == 0:
                timings.usage = probe(receiver, lab)
            started = time.monotonic()
            source.withdraw()
            timings.withdraw.append(fib.wait_for_count(receiver.held, 0, timeout) - started)
            log.info("receiver=%s prefixes=%d length=%d repeat=%d announce=%.3f withdraw=%.3f",
                     receiver_name, count, length, repeat, timings.announce[-1],
                     timings.withdraw[-1])
    return timings

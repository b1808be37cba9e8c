"""Run ``bgpnet`` with every kernel route write slowed down: a test-only wrapper.

Usage: ``slow_writer_agent.py DELAY RECORD BGPNET-ARGUMENTS...``. Each call of
``RouteWriter.apply`` first sleeps DELAY seconds, as a kernel under load might take,
then writes as usual and appends one line "added replaced deleted changes" to the
file RECORD: the sizes of the plan, and the number of prefix changes (announced or
withdrawn prefixes) that reached the RIB so far. The agent code itself has no such hook.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bgpnet import cli
from bgpnet.bgp import rib
from bgpnet.kernel import routes
from bgpnet.model import Announce, Withdraw


def main() -> int:
    delay = float(sys.argv[1])
    record = Path(sys.argv[2])
    original_apply = routes.RouteWriter.apply
    original_rib_apply = rib.Rib.apply
    changes = 0

    def counting_rib_apply(self, event):
        nonlocal changes
        if isinstance(event, (Announce, Withdraw)):
            changes += len(event.prefixes)
        return original_rib_apply(self, event)

    def slow_apply(self, plan):
        time.sleep(delay)
        result = original_apply(self, plan)
        with record.open("a") as handle:
            handle.write(f"{len(plan.add)} {len(plan.replace)} {len(plan.delete)} {changes}\n")
        return result

    rib.Rib.apply = counting_rib_apply
    routes.RouteWriter.apply = slow_apply
    return cli.main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())

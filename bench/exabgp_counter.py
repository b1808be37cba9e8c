"""A trivial ExaBGP API process: count announced and withdrawn prefixes, do nothing else.

Usage: exabgp_counter.py OUTPUT_FILE. For every JSON line ExaBGP writes, the
announced and withdrawn NLRI are counted, and after each UPDATE line the running
totals are written to OUTPUT_FILE as ``announced withdrawn`` (written to a temporary
file and renamed, so a reader never sees half a line). It answers nothing, so it
measures ExaBGP's own cost of parsing UPDATEs and printing them as JSON.
"""

from __future__ import annotations

import json
import os
import sys


def count_nlri(update: dict) -> tuple[int, int]:
    """Return the numbers of (announced, withdrawn) prefixes in an ExaBGP update body."""
    announced = sum(len(nlris) for by_hop in update.get("announce", {}).values()
                    for nlris in by_hop.values())
    withdrawn = sum(len(nlris) for nlris in update.get("withdraw", {}).values())
    return announced, withdrawn


def main() -> int:
    output = sys.argv[1]
    announced = withdrawn = 0
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        update = message.get("neighbor", {}).get("message", {}).get("update")
        if not isinstance(update, dict):
            continue
        more_announced, more_withdrawn = count_nlri(update)
        announced += more_announced
        withdrawn += more_withdrawn
        temp = output + ".tmp"
        with open(temp, "w") as stream:
            stream.write(f"{announced} {withdrawn}\n")
        os.replace(temp, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

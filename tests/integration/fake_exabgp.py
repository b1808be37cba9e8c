"""A stand-in for ``exabgp server CONFIG`` that replays recorded API output: test only.

Usage: ``fake_exabgp.py LINES server CONFIG``. It starts the API process named in
CONFIG's ``run`` line (the agent's relay), writes the bytes of the file LINES to the
relay's stdin as if ExaBGP had printed them, drains what the agent sends back, and
then stays up until it is killed, so the relay connection stays open.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    lines = Path(sys.argv[1]).read_bytes()
    config = Path(sys.argv[-1]).read_text()
    match = re.search(r"^\s*run (.+);$", config, re.MULTILINE)
    if match is None:
        print(f"fake_exabgp: no run line in {sys.argv[-1]}", file=sys.stderr)
        return 1
    relay = subprocess.Popen(shlex.split(match.group(1)), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    threading.Thread(target=lambda: relay.stdout.read(), daemon=True).start()
    relay.stdin.write(lines)
    relay.stdin.flush()
    while relay.poll() is None:
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

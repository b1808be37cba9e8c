"""The API program of the ExaBGP route source used by the integration tests.

Usage: ``exabgp_source.py COMMANDS STATES DONE [BATCH PAUSE]``. Once ExaBGP reports the
session up, it writes every line of the file COMMANDS to its stdout (ExaBGP's API),
BATCH lines at a time with PAUSE seconds between batches, then creates the file DONE.
Pacing keeps ExaBGP from merging successive changes of one prefix into one UPDATE. Every session state message ExaBGP sends is appended to the file
STATES, so tests see the session through the peer's eyes. It keeps reading its stdin,
so ExaBGP never blocks writing to it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    commands, states, done = (Path(arg) for arg in sys.argv[1:4])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    up = threading.Event()

    def read_messages() -> None:
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("type") != "state":
                continue
            with states.open("a") as handle:
                handle.write(json.dumps(message) + "\n")
            if message["neighbor"]["state"] == "up":
                up.set()

    reader = threading.Thread(target=read_messages, daemon=True)
    reader.start()
    up.wait()
    with commands.open() as lines:
        for count, line in enumerate(lines, start=1):
            sys.stdout.write(line)
            if batch and count % batch == 0:
                sys.stdout.flush()
                time.sleep(pause)
        sys.stdout.flush()
    done.touch()
    reader.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

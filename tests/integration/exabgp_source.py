"""The API program of the ExaBGP route source used by the integration tests.

Usage: ``exabgp_source.py COMMANDS STATES DONE``. Once ExaBGP reports the session up,
it writes every line of the file COMMANDS to its stdout (ExaBGP's API), then creates
the file DONE. Every session state message ExaBGP sends is appended to the file
STATES, so tests see the session through the peer's eyes. It keeps reading its stdin,
so ExaBGP never blocks writing to it.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path


def main() -> int:
    commands, states, done = (Path(arg) for arg in sys.argv[1:4])
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
        for line in lines:
            sys.stdout.write(line)
        sys.stdout.flush()
    done.touch()
    reader.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

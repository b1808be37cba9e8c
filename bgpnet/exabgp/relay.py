"""The API process that ExaBGP runs: a byte pump between ExaBGP's pipes and the agent.

ExaBGP starts this program (``process bgpnet { run ... }``) and talks to it over its
stdin and stdout. The relay connects to the agent's unix socket and copies bytes both
ways without parsing them: ExaBGP → stdin → socket, and socket → stdout → ExaBGP.

Rules:
- Never interpret the data. The agent validates every line; a relay that parsed lines
  could fail on a malformed one and take ExaBGP's API down with it.
- Read stdin continuously in its own thread, so ExaBGP is never left blocked writing
  acknowledgements or updates while the agent sends commands.
- Exit when either side closes. ExaBGP respawns the relay, and the agent restarts
  ExaBGP when ExaBGP gives up after repeated relay exits.

Imports are limited to the standard library so that ExaBGP's respawns start quickly.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 30.0  # seconds to wait for the agent's socket to accept connections
CHUNK = 65536


def connect(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Connect to the agent's unix socket, retrying while it is not there yet."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def pump_stdin(sock: socket.socket, stdin_fd: int) -> None:
    """Copy ExaBGP's output (our stdin) to the agent until either side closes."""
    try:
        while True:
            data = os.read(stdin_fd, CHUNK)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    finally:
        # Tell the agent that ExaBGP's side is gone; the other direction ends with it.
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def pump_socket(sock: socket.socket, stdout_fd: int) -> None:
    """Copy the agent's commands to ExaBGP (our stdout) until the agent closes."""
    while True:
        try:
            data = sock.recv(CHUNK)
        except OSError:
            return
        if not data:
            return
        view = memoryview(data)
        while view:
            written = os.write(stdout_fd, view)
            view = view[written:]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: bgpnet-relay SOCKET_PATH", file=sys.stderr)
        return 2
    try:
        sock = connect(args[0])
    except OSError as exc:
        print(f"bgpnet-relay: connecting to agent socket {args[0]} failed: {exc}; "
              "is the agent running?", file=sys.stderr)
        return 1
    reader = threading.Thread(target=pump_stdin, args=(sock, sys.stdin.fileno()), daemon=True)
    reader.start()
    try:
        pump_socket(sock, sys.stdout.fileno())
    except BrokenPipeError:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

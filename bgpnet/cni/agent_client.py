"""Client side of the agent's control socket, for the CNI plugin's fast path.

Role: send one JSON request to the agent of the current network namespace and return
its JSON reply, or None when no agent listens. Standard library only, because the
plugin imports it on every call.

The socket is the abstract unix address ``\\0bgpnet-agent``. Linux scopes abstract
addresses to the network namespace, so a process started in a node's namespace
reaches that node's agent and no other, and no path has to be configured. The
protocol is one JSON object per line in each direction.
"""

from __future__ import annotations

import errno
import json
import socket

CONTROL_ADDRESS = "\0bgpnet-agent"
# An ADD waits for the agent's netlink work, which queues behind concurrent ADDs.
REPLY_TIMEOUT = 60.0  # seconds
_NO_LISTENER = (errno.ECONNREFUSED, errno.ENOENT)


class AgentUnavailable(Exception):
    """The agent accepted the connection but sent no valid reply in time."""


def call(request: dict, timeout: float = REPLY_TIMEOUT) -> dict | None:
    """Send ``request`` to the agent and return its reply; None when nothing listens.

    Raises AgentUnavailable when the agent does not reply within ``timeout``
    seconds or replies with something other than one JSON object.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(CONTROL_ADDRESS)
        except OSError as exc:
            if exc.errno in _NO_LISTENER:
                return None
            raise AgentUnavailable(f"connect to the agent's control socket failed: {exc}") from exc
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_line(sock)
        except OSError as exc:  # socket.timeout is an OSError
            raise AgentUnavailable(f"agent did not reply: {exc}") from exc
    finally:
        sock.close()
    try:
        decoded = json.loads(reply)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        raise AgentUnavailable(f"agent sent an invalid reply: {reply[:200]!r}")
    return decoded


def _read_line(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)

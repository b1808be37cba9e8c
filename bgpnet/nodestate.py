"""The node state file: what the agent has set up, for the pod-attachment code to read.

The agent writes ``<state_dir>/node.json`` after the bridge is up; readers (the CNI
plugin, the lab) never guess the pod CIDR or bridge on their own. The file is replaced
atomically (temp file, fsync, rename), so a reader sees the old or the new content and
never half of one.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bgpnet.model import Prefix

FILE_NAME = "node.json"


@dataclass(frozen=True)
class NodeState:
    node: str
    pod_cidr: Prefix
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address
    bridge: str
    mtu: int

    def to_json(self) -> str:
        return json.dumps({
            "node": self.node,
            "pod_cidr": str(self.pod_cidr),
            "gateway": str(self.gateway),
            "bridge": self.bridge,
            "mtu": self.mtu,
        }, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "NodeState":
        data = json.loads(text)
        return cls(
            node=str(data["node"]),
            pod_cidr=ipaddress.ip_network(data["pod_cidr"]),
            gateway=ipaddress.ip_address(data["gateway"]),
            bridge=str(data["bridge"]),
            mtu=int(data["mtu"]),
        )


def write(state_dir: Path, state: NodeState) -> Path:
    """Write the node state atomically and return its path."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / FILE_NAME
    fd, tmp = tempfile.mkstemp(prefix=".node.", dir=state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(state.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with _ignore_missing():
            os.unlink(tmp)
        raise
    return path


def read(state_dir: Path) -> NodeState:
    """Read the node state; raise FileNotFoundError when the agent has not written it."""
    return NodeState.from_json((state_dir / FILE_NAME).read_text(encoding="utf-8"))


class _ignore_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        return kind is FileNotFoundError

"""Parse a containerlab topology file into frozen dataclasses, and validate it.

Role: the boundary between a ``*.clab.yml`` file and the lab builder. Only
``load_file`` reads a file; ``parse`` is pure and raises ``ConfigError`` naming the
file, the dotted key (``topology.nodes.tor.binds[0]``) and the value.

The same file deploys with containerlab and Docker, so only standard containerlab keys
are read: ``name``, ``topology.nodes.<node>.kind/image/binds/exec/labels/env`` and
``topology.links[].endpoints``. Other containerlab keys are accepted and ignored, so a
file that containerlab takes is not rejected for an option this lab does not use.

How the lab recognises a node's role:

- ``kind: bridge`` is an L2 segment. containerlab expects a host bridge of that name;
  this lab makes the bridge inside a namespace of its own instead.
- A ``linux`` node with a bind whose target is ``/etc/frr/frr.conf`` is an FRR router.
  The lab starts zebra and bgpd with that file; the ``/etc/frr/daemons`` bind is for
  the FRR image only.
- A ``linux`` node with a bind whose target is ``/etc/bgpnet/agent.yaml`` is a bgpnet
  node: the lab runs ``bgpnet agent`` with that file and attaches the number of pods
  that its ``bgpnet.pods`` label gives (default 0).
- Any other ``linux`` node is a plain host: a namespace, its links and exec lines.

Bind sources are relative to the topology file's directory, as in containerlab.
"""

from __future__ import annotations

import os.path
import re
import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from bgpnet.errors import ConfigError

FRR_CONFIG_TARGET = "/etc/frr/frr.conf"
AGENT_CONFIG_TARGET = "/etc/bgpnet/agent.yaml"
PODS_LABEL = "bgpnet.pods"
MAX_PODS = 16

# Lab and node names become namespace names and parts of them; they are kept short
# and shell-safe even though a namespace name may be longer.
_LAB_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
# Linux IFNAMSIZ is 16 including the terminating NUL (include/uapi/linux/if.h).
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


class Role(Enum):
    BRIDGE = "bridge"
    FRR = "frr"
    AGENT = "agent"
    HOST = "host"


@dataclass(frozen=True)
class Bind:
    source: Path  # absolute, resolved against the topology file's directory
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    role: Role
    image: str = ""
    binds: tuple[Bind, ...] = ()
    exec_lines: tuple[tuple[str, ...], ...] = ()  # each line split into argv
    pods: int = 0

    def bind_source(self, target: str) -> Path | None:
        """Return the host file bound to ``target``, or None."""
        for bind in self.binds:
            if bind.target == target:
                return bind.source
        return None


@dataclass(frozen=True, order=True)
class Endpoint:
    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    name: str
    path: Path
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def with_role(self, role: Role) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if node.role is role)


def load_file(path: str | Path) -> Topology:
    """Read and validate a topology file; raise ConfigError for unreadable or invalid files."""
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot be read ({exc.strerror})",
                          "pass an existing containerlab topology file") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), None, f"is not valid YAML ({exc})",
                          "fix the syntax at the line shown") from exc
    return parse(data, path)


def parse(data: Any, path: Path) -> Topology:
    """Validate a decoded topology document; ``path`` names the file in errors and anchors binds."""
    where = _Where(path)
    doc = _mapping(data, where, "")
    name = doc.get("name")
    if not isinstance(name, str) or not _LAB_NAME.match(name):
        raise where.error("name", name, "is not a valid lab name",
                          "use 1-24 lower-case letters, digits or '-', starting with a letter or digit")
    topo = _mapping(doc.get("topology"), where, "topology")
    raw_nodes = _mapping(topo.get("nodes"), where, "topology.nodes")
    if not raw_nodes:
        raise where.error("topology.nodes", raw_nodes, "is empty", "define at least one node")

    nodes = tuple(_node(key, value, where) for key, value in raw_nodes.items())
    links = _links(topo.get("links", []), {node.name: node for node in nodes}, where)
    return Topology(name=name, path=path, nodes=nodes, links=links)


class _Where:
    """The file being parsed, for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, value: Any, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}", value, problem, fix)


def _node(name: Any, data: Any, where: _Where) -> Node:
    key = f"topology.nodes.{name}"
    if not isinstance(name, str) or not _NODE_NAME.match(name):
        raise where.error(key, name, "is not a valid node name",
                          "use 1-24 lower-case letters, digits or '-'")
    doc = _mapping(data, where, key)
    kind = doc.get("kind")
    if kind not in ("linux", "bridge"):
        raise where.error(f"{key}.kind", kind, "is not a kind this lab can build",
                          "use kind: linux for routers and nodes, kind: bridge for an L2 segment")
    image = doc.get("image", "")
    if not isinstance(image, str):
        raise where.error(f"{key}.image", image, "is not a string", "quote the image name")
    binds = _binds(doc.get("binds", []), where, key)
    exec_lines = _exec_lines(doc.get("exec", []), where, key)
    labels = _mapping(doc.get("labels", {}), where, f"{key}.labels")
    # env is checked for shape only: the lab does not pass it to the processes it starts.
    _mapping(doc.get("env", {}), where, f"{key}.env")

    targets = {bind.target for bind in binds}
    if kind == "bridge":
        if binds or exec_lines:
            raise where.error(key, name, "is a bridge with binds or exec lines",
                              "remove binds and exec from the bridge node")
        role = Role.BRIDGE
        if len(name) > 15:
            raise where.error(key, name, "is too long for a bridge name",
                              "use at most 15 characters, the Linux interface name limit")
    elif FRR_CONFIG_TARGET in targets and AGENT_CONFIG_TARGET in targets:
        raise where.error(f"{key}.binds", sorted(targets),
                          "binds both an FRR config and a bgpnet agent config",
                          "run FRR and the agent on separate nodes")
    elif FRR_CONFIG_TARGET in targets:
        role = Role.FRR
    elif AGENT_CONFIG_TARGET in targets:
        role = Role.AGENT
    else:
        role = Role.HOST

    pods = _pods(labels.get(PODS_LABEL, "0"), where, f"{key}.labels.{PODS_LABEL}")
    if pods and role is not Role.AGENT:
        raise where.error(f"{key}.labels.{PODS_LABEL}", labels[PODS_LABEL],
                          "is set on a node without an agent config",
                          f"bind an agent config to {AGENT_CONFIG_TARGET} or remove the label")
    for bind in binds:
        if bind.target in (FRR_CONFIG_TARGET, AGENT_CONFIG_TARGET) and not bind.source.is_file():
            raise where.error(f"{key}.binds", f"{bind.source}:{bind.target}",
                              "names a source file that does not exist",
                              "fix the path; it is relative to the topology file's directory")
    return Node(name=name, kind=kind, role=role, image=image, binds=binds,
                exec_lines=exec_lines, pods=pods)


def _binds(data: Any, where: _Where, key: str) -> tuple[Bind, ...]:
    if not isinstance(data, list):
        raise where.error(f"{key}.binds", data, "is not a list", "write binds as a YAML list")
    binds = []
    for index, item in enumerate(data):
        item_key = f"{key}.binds[{index}]"
        parts = item.split(":") if isinstance(item, str) else []
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise where.error(item_key, item, "is not source:target[:mode]",
                              "write a bind as path/on/host:/path/in/node, optionally with :ro")
        if len(parts) == 3 and parts[2] not in ("ro", "rw"):
            raise where.error(item_key, item, f"has an unknown mode {parts[2]!r}", "use ro or rw")
        source = Path(parts[0]).expanduser()
        if not source.is_absolute():
            source = where.path.parent / source
        binds.append(Bind(source=Path(_normalise(source)), target=parts[1],
                          read_only=len(parts) == 3 and parts[2] == "ro"))
    return tuple(binds)


def _normalise(path: Path) -> str:
    # Collapse "a/../b" without resolving symlinks, as a user reading the file would.
    return os.path.normpath(str(path))


def _exec_lines(data: Any, where: _Where, key: str) -> tuple[tuple[str, ...], ...]:
    if not isinstance(data, list):
        raise where.error(f"{key}.exec", data, "is not a list", "write exec as a YAML list of commands")
    lines = []
    for index, item in enumerate(data):
        item_key = f"{key}.exec[{index}]"
        if not isinstance(item, str) or not item.strip():
            raise where.error(item_key, item, "is not a command", "write a command line as a string")
        try:
            argv = tuple(shlex.split(item))
        except ValueError as exc:
            raise where.error(item_key, item, f"cannot be split into words ({exc})",
                              "balance the quotes") from None
        lines.append(argv)
    return tuple(lines)


def _pods(value: Any, where: _Where, key: str) -> int:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not text.isdigit() or not 0 <= int(text) <= MAX_PODS:
        raise where.error(key, value, "is not a pod count",
                          f"write a quoted whole number from 0 to {MAX_PODS}, such as \"2\"")
    return int(text)


def _links(data: Any, nodes: dict[str, Node], where: _Where) -> tuple[Link, ...]:
    if not isinstance(data, list):
        raise where.error("topology.links", data, "is not a list",
                          "write links as a YAML list of {endpoints: [a:eth1, b:eth1]}")
    links = []
    seen: set[Endpoint] = set()
    for index, item in enumerate(data):
        key = f"topology.links[{index}]"
        doc = _mapping(item, where, key)
        raw = doc.get("endpoints")
        if not isinstance(raw, list) or len(raw) != 2:
            raise where.error(f"{key}.endpoints", raw, "is not a list of two endpoints",
                              "write endpoints: [\"node01:eth1\", \"br-bgpnet:node01-eth1\"]")
        pair = [_endpoint(text, nodes, where, f"{key}.endpoints[{side}]")
                for side, text in enumerate(raw)]
        for side, endpoint in enumerate(pair):
            if endpoint in seen:
                raise where.error(f"{key}.endpoints[{side}]", str(endpoint), "is used by another link",
                                  "give each link its own interface names")
            seen.add(endpoint)
        roles = [nodes[endpoint.node].role for endpoint in pair]
        if roles == [Role.BRIDGE, Role.BRIDGE]:
            raise where.error(f"{key}.endpoints", raw, "connects two bridges",
                              "connect each bridge to nodes only")
        if pair[0].node == pair[1].node:
            raise where.error(f"{key}.endpoints", raw, "connects a node to itself",
                              "connect two different nodes")
        links.append(Link(a=pair[0], b=pair[1]))
    return tuple(links)


def _endpoint(text: Any, nodes: dict[str, Node], where: _Where, key: str) -> Endpoint:
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2:
        raise where.error(key, text, "is not node:interface", "write an endpoint such as node01:eth1")
    node, interface = parts
    if node not in nodes:
        raise where.error(key, text, f"names an unknown node {node!r}",
                          f"use one of: {', '.join(sorted(nodes))}")
    if not _IFNAME.match(interface):
        raise where.error(key, text, "has an invalid interface name",
                          "use 1-15 letters, digits, '-', '_' or '.'")
    if interface == "lo":
        raise where.error(key, text, "uses the loopback interface", "use eth1 or another name")
    return Endpoint(node=node, interface=interface)


def _mapping(data: Any, where: _Where, key: str) -> dict[Any, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise where.error(key or "(document)", data, "is not a mapping",
                          "write it as key: value lines")
    return data

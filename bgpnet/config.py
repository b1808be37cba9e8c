"""Load the agent's YAML config and validate it into frozen dataclasses.

Rules:
- Every check runs before the agent touches the host.
- The first bad value raises ``ConfigError`` naming the field (a dotted path such as
  ``peers[1].asn``), the value and the fix.
- Unknown keys are errors, so a misspelt option is never silently ignored.
- Nothing here performs I/O except ``load_file``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bgpnet.errors import ConfigError
from bgpnet.model import Address, Prefix

# Route protocol numbers that the kernel, iproute2's rt_protos or FRR's
# rt_protos.d/frr.conf already name (BIRD uses 12, zebra 11, FRR 186-197).
RESERVED_ROUTE_PROTOCOLS = frozenset([*range(0, 19), 42, 99, *range(186, 198)])
DEFAULT_ROUTE_PROTOCOL = 201

# Linux IFNAMSIZ is 16 including the terminating NUL (include/uapi/linux/if.h).
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
# A Kubernetes node name: a DNS-1123 subdomain label.
# Strings written into ExaBGP's config, whose tokenizer has no escape for '"' or '\\'.
_CONFIG_STRING = re.compile(r'^[^"\\\x00-\x1f\x7f]+$')
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class NodeConfig:
    name: str
    address: Address  # BGP router-id source, local address and next hop for the pod CIDR
    asn: int
    router_id: ipaddress.IPv4Address


@dataclass(frozen=True)
class BridgeConfig:
    name: str = "v-net-0"
    mtu: int = 1500


@dataclass(frozen=True)
class PeerConfig:
    address: Address
    asn: int
    name: str = ""
    port: int = 179
    passive: bool = False
    hold_time: int = 90
    md5_password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.name or str(self.address)


@dataclass(frozen=True)
class AgentConfig:
    node: NodeConfig
    pod_cidr: Prefix
    cluster_cidr: Prefix
    bridge: BridgeConfig
    peers: tuple[PeerConfig, ...]
    route_protocol: int = DEFAULT_ROUTE_PROTOCOL
    state_dir: Path = Path("/run/bgpnet")
    http_listen: tuple[str, int] | None = ("127.0.0.1", 9180)
    resync_seconds: float = 30.0
    graceful_restart: bool = True
    # RFC 4724 restart time, also the longest wait for End-of-RIB before routes found in
    # the kernel at start, and not confirmed by a peer, are removed.
    restart_time: int = 120
    exabgp_command: str = "exabgp"

    @property
    def gateway(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The bridge address: first host of the pod CIDR, with its prefix length."""
        first = next(iter(self.pod_cidr.hosts()))
        return ipaddress.ip_interface(f"{first}/{self.pod_cidr.prefixlen}")


def load_file(path: str | Path) -> AgentConfig:
    """Read and validate ``path``; raise ConfigError for unreadable or invalid files."""
    try:
        with open(path, encoding="utf-8") as handle:
            # Reading from the file, not a string, puts its name in YAML error marks.
            data = yaml.load(handle, Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise ConfigError("config", str(path), f"cannot be read ({exc.strerror})",
                          "pass an existing file with --config") from exc
    except _DuplicateKey as exc:
        raise ConfigError(exc.key, exc.value, f"is set twice (line {exc.line})",
                          "keep one of the two lines") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("config", str(path), f"is not valid YAML ({exc})",
                          "fix the syntax at the line shown") from exc
    return parse(data)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, value: Any, line: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line}")
        self.key = key
        self.value = value
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping.

    PyYAML keeps the last value silently, so a second ``pod_cidr`` line would win
    without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                value = self.construct_object(value_node, deep=deep)
                raise _DuplicateKey(str(key), value, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse(data: Any) -> AgentConfig:
    """Validate a decoded YAML document into an AgentConfig."""
    doc = _mapping(data, "config", {
        "node", "pod_cidr", "cluster_cidr", "bridge", "peers", "route_protocol",
        "state_dir", "http", "resync_seconds", "graceful_restart", "exabgp",
    })
    node = _node(_required(doc, "node", "config"))
    cluster_cidr = _network(_required(doc, "cluster_cidr", "config"), "cluster_cidr")
    pod_cidr = _pod_cidr(_required(doc, "pod_cidr", "config"), cluster_cidr)
    if node.address in cluster_cidr:
        raise ConfigError("node.address", str(node.address), f"is inside cluster_cidr {cluster_cidr}",
                          "use the node's address on the network it peers on, outside the pod range")
    bridge = _bridge(doc.get("bridge", {}))
    peers = _peers(doc.get("peers", []), node)

    route_protocol = _integer(doc.get("route_protocol", DEFAULT_ROUTE_PROTOCOL),
                              "route_protocol", 1, 255)
    if route_protocol in RESERVED_ROUTE_PROTOCOLS:
        raise ConfigError("route_protocol", route_protocol,
                          "is already used by the kernel, iproute2, BIRD or FRR",
                          f"pick a free number such as {DEFAULT_ROUTE_PROTOCOL}")

    state_dir = doc.get("state_dir", "/run/bgpnet")
    if not isinstance(state_dir, str) or not state_dir.startswith("/"):
        raise ConfigError("state_dir", state_dir, "is not an absolute path",
                          "use a path such as /run/bgpnet")

    http = _mapping(doc.get("http", {}), "http", {"listen"})
    http_listen = _listen(http.get("listen", "127.0.0.1:9180"))

    graceful = _graceful_restart(doc.get("graceful_restart", {}))

    exabgp = _mapping(doc.get("exabgp", {}), "exabgp", {"command"})
    exabgp_command = exabgp.get("command", "exabgp")
    if not isinstance(exabgp_command, str) or not exabgp_command:
        raise ConfigError("exabgp.command", exabgp_command, "is not a program name",
                          "give the exabgp executable, for example /usr/local/bin/exabgp")

    return AgentConfig(
        node=node,
        pod_cidr=pod_cidr,
        cluster_cidr=cluster_cidr,
        bridge=bridge,
        peers=peers,
        route_protocol=route_protocol,
        state_dir=Path(state_dir),
        http_listen=http_listen,
        resync_seconds=_number(doc.get("resync_seconds", 30), "resync_seconds", 1, 3600),
        graceful_restart=graceful["enabled"],
        restart_time=graceful["restart_time"],
        exabgp_command=exabgp_command,
    )


def _node(data: Any) -> NodeConfig:
    doc = _mapping(data, "node", {"name", "address", "asn", "router_id"})
    name = _required(doc, "name", "node")
    if not isinstance(name, str) or not _NODE_NAME.match(name):
        raise ConfigError("node.name", name, "is not a valid node name",
                          "use lower-case letters, digits and '-', at most 63 characters")
    address = _address(_required(doc, "address", "node"), "node.address")
    asn = _asn(_required(doc, "asn", "node"), "node.asn")
    if "router_id" in doc:
        router_id = _address(doc["router_id"], "node.router_id")
    elif address.version == 4:
        router_id = address
    else:
        raise ConfigError("node.router_id", None, "is required when node.address is IPv6",
                          "set node.router_id to an IPv4 address unique in the AS")
    if router_id.version != 4:
        raise ConfigError("node.router_id", str(router_id), "is not an IPv4 address",
                          "BGP identifiers are 32-bit: use an IPv4 address")
    return NodeConfig(name=name, address=address, asn=asn, router_id=router_id)


def _pod_cidr(value: Any, cluster_cidr: Prefix) -> Prefix:
    pod_cidr = _network(value, "pod_cidr")
    if pod_cidr.version != cluster_cidr.version:
        raise ConfigError("pod_cidr", str(pod_cidr), "is not the same family as cluster_cidr",
                          f"use an IPv{cluster_cidr.version} subnet of {cluster_cidr}")
    if not pod_cidr.subnet_of(cluster_cidr):  # type: ignore[arg-type]
        raise ConfigError("pod_cidr", str(pod_cidr), f"is not inside cluster_cidr {cluster_cidr}",
                          "pick a subnet of cluster_cidr, one per node")
    if pod_cidr == cluster_cidr:
        raise ConfigError("pod_cidr", str(pod_cidr), "covers the whole cluster_cidr",
                          "give each node a smaller subnet, such as a /24")
    max_len = 30 if pod_cidr.version == 4 else 126
    if pod_cidr.prefixlen > max_len:
        raise ConfigError("pod_cidr", str(pod_cidr), "leaves no address for pods",
                          f"use a prefix length of at most /{max_len}")
    return pod_cidr


def _graceful_restart(data: Any) -> dict[str, Any]:
    doc = _mapping(data, "graceful_restart", {"enabled", "restart_time"})
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("graceful_restart.enabled", enabled, "is not true or false",
                          "write enabled: true or enabled: false")
    # The capability carries the restart time in 12 bits (RFC 4724 section 3).
    restart_time = _integer(doc.get("restart_time", 120), "graceful_restart.restart_time", 1, 4095)
    return {"enabled": enabled, "restart_time": restart_time}


def _bridge(data: Any) -> BridgeConfig:
    doc = _mapping(data, "bridge", {"name", "mtu"})
    name = doc.get("name", "v-net-0")
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise ConfigError("bridge.name", name, "is not a valid interface name",
                          "use 1-15 letters, digits, '-', '_' or '.'")
    mtu = _integer(doc.get("mtu", 1500), "bridge.mtu", 68, 65535)
    return BridgeConfig(name=name, mtu=mtu)


def _peers(data: Any, node: NodeConfig) -> tuple[PeerConfig, ...]:
    if not isinstance(data, list):
        raise ConfigError("peers", data, "is not a list",
                          "write peers as a YAML list of {address, asn}")
    peers: list[PeerConfig] = []
    seen: set[Address] = set()
    for index, item in enumerate(data):
        where = f"peers[{index}]"
        doc = _mapping(item, where, {"address", "asn", "name", "port", "passive",
                                     "hold_time", "md5_password"})
        address = _address(_required(doc, "address", where), f"{where}.address")
        if address == node.address:
            raise ConfigError(f"{where}.address", str(address), "is the node's own address",
                              "list the router or the other nodes, not this node")
        if address in seen:
            raise ConfigError(f"{where}.address", str(address), "is listed twice",
                              "keep one entry per peer")
        if address.version != node.address.version:
            raise ConfigError(f"{where}.address", str(address),
                              f"is IPv{address.version} but node.address is IPv{node.address.version}",
                              "peer over the same family as node.address, the session's local address")
        seen.add(address)
        hold_time = _integer(doc.get("hold_time", 90), f"{where}.hold_time", 0, 65535)
        if 0 < hold_time < 3:  # RFC 4271 section 4.2: zero or at least three seconds
            raise ConfigError(f"{where}.hold_time", hold_time, "is 1 or 2 seconds",
                              "use 0 (no keepalives) or 3 seconds or more")
        password = doc.get("md5_password")
        if password is not None and (not isinstance(password, str)
                                     or not 1 <= len(password) <= 80
                                     or not _CONFIG_STRING.match(password)):
            # TCP_MD5SIG_MAXKEYLEN is 80 (include/uapi/linux/tcp.h).
            raise ConfigError(f"{where}.md5_password", "<hidden>", "is not a 1-80 character string of printable characters",
                              "quote the password in YAML; it cannot contain '\"' or '\\'")
        name = doc.get("name", "")
        if not isinstance(name, str) or (name and not _CONFIG_STRING.match(name)):
            raise ConfigError(f"{where}.name", name, "is not a plain string",
                              "use printable characters without '\"' or '\\'")
        passive = doc.get("passive", False)
        if not isinstance(passive, bool):
            raise ConfigError(f"{where}.passive", passive, "is not true or false",
                              "write passive: true or passive: false")
        peers.append(PeerConfig(
            address=address,
            asn=_asn(_required(doc, "asn", where), f"{where}.asn"),
            name=name,
            port=_integer(doc.get("port", 179), f"{where}.port", 1, 65535),
            passive=passive,
            hold_time=hold_time,
            md5_password=password,
        ))
    return tuple(peers)


def _mapping(data: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(where, data, "is not a mapping", f"write {where} as key: value lines")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}" if where != "config" else str(key), data[key],
                              "is not a known option",
                              f"remove it or use one of: {', '.join(sorted(allowed))}")
    return data


def _required(doc: dict[str, Any], key: str, where: str) -> Any:
    if key not in doc or doc[key] is None:
        name = key if where == "config" else f"{where}.{key}"
        raise ConfigError(name, None, "is missing", f"add {name} to the config")
    return doc[key]


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "is not an integer", f"use a whole number from {low} to {high}")
    if not low <= value <= high:
        raise ConfigError(name, value, "is out of range", f"use a number from {low} to {high}")
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, value, "is not a number", f"use seconds from {low} to {high}")
    if not low <= value <= high:
        raise ConfigError(name, value, "is out of range", f"use seconds from {low} to {high}")
    return float(value)


def _asn(value: Any, name: str) -> int:
    # Four-octet AS numbers (RFC 6793); 0 and 4294967295 are reserved (RFC 7607, RFC 7300).
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "is not an AS number",
                          "use a whole number such as 64512 (not quoted, not asdot)")
    if not 1 <= value <= 4294967294:
        raise ConfigError(name, value, "is out of range", "use an AS number from 1 to 4294967294")
    if value == 23456:
        raise ConfigError(name, value, "is AS_TRANS, the RFC 6793 placeholder for four-octet AS numbers",
                          "use the real AS number")
    return value


def _address(value: Any, name: str) -> Address:
    try:
        address = ipaddress.ip_address(value if isinstance(value, str) else str(value))
    except ValueError:
        raise ConfigError(name, value, "is not an IP address",
                          "write a plain address such as 192.168.1.11, without a prefix length") from None
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        raise ConfigError(name, str(address), "is unspecified, loopback or multicast",
                          "use the node's address on the network it peers on")
    return address


def _network(value: Any, name: str) -> Prefix:
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(name, value, "is not a CIDR",
                          "write a network with its prefix length, such as 10.244.1.0/24")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(name, value, "is not a CIDR",
                          "write a network with its prefix length, such as 10.244.1.0/24") from None
    if network.network_address != ipaddress.ip_address(value.split("/")[0]):
        raise ConfigError(name, value, "has host bits set", f"use the network address: {network}")
    if network.prefixlen == 0:
        raise ConfigError(name, value, "is a default route", "use a specific network such as 10.244.0.0/16")
    return network


def _listen(value: Any) -> tuple[str, int] | None:
    if value is None or value is False:
        return None
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError("http.listen", value, "is not host:port",
                          "write it as 127.0.0.1:9180, or null to turn the HTTP API off")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise ConfigError("http.listen", value, "is not host:port",
                          "write it as 127.0.0.1:9180, with an IP address, not a name") from None
    if not 1 <= port <= 65535:
        raise ConfigError("http.listen", value, "has a port out of range", "use a port from 1 to 65535")
    return host, port

"""Parse and validate what a container runtime passes to the CNI plugin.

Role: turn the ``CNI_*`` environment variables and the network config on stdin into
one frozen ``CniRequest``, or raise ``CniError`` with the spec's error code. Pure: no
I/O, and only the standard library plus bgpnet modules that import nothing else,
because the plugin imports this module on every call and its start-up time counts.

Rules:
- Supported config versions are 0.4.0, 1.0.0 and 1.1.0. Another ``cniVersion`` is
  error 1 (incompatible version). GC and STATUS exist only from 1.1.0 on.
- A config that is not JSON is error 6. A missing or invalid key is error 7 and names
  the key. A missing or invalid ``CNI_*`` variable is error 4 and names the variable.
- Container ids and interface names are checked with the lease store's rules before
  any of them reaches a path, a link name or a log line.
- Keys that the plugin does not know are ignored, as the spec requires of plugins
  (runtimes add ``runtimeConfig``, ``args`` and others).
- ``CNI_PATH`` is accepted but not required: the plugin delegates to no other plugin.

Plugin keys besides the spec's: ``bridge`` (bridge name), ``subnet`` (pod CIDR),
``gateway`` (default: first host of ``subnet``), ``mtu`` and ``stateDir`` (where the
node state and leases are, when no agent replies on the control socket). ``subnet``,
``bridge`` and ``mtu`` override what the agent reports for the node.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bgpnet.cni import result
from bgpnet.cni.ipam import validate_container_id, validate_ifname
from bgpnet.cni.result import SUPPORTED_VERSIONS, CniError
from bgpnet.errors import LeaseError

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# Commands that the CNI spec added in 1.1.0.
COMMANDS_SINCE_1_1 = ("GC", "STATUS")
# Commands that act on one container attachment and need its id and interface name.
ATTACHMENT_COMMANDS = ("ADD", "DEL", "CHECK")
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"

# The network name rule of the CNI spec ("Configuration format", name).
_NETWORK_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
# Linux interface names (IFNAMSIZ 16 with the NUL), as the agent config accepts them.
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MTU_RANGE = (68, 65535)  # IPv4 minimum MTU (RFC 791) to the largest IP packet


@dataclass(frozen=True)
class NetConf:
    """The plugin's entry of a network config list, with the list's name and version."""

    cni_version: str
    name: str
    type: str
    bridge: str | None = None
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    mtu: int | None = None
    state_dir: str | None = None
    prev_result: Mapping | None = None
    valid_attachments: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class CniRequest:
    """One plugin call: the command, the ``CNI_*`` variables and the parsed config."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: tuple[tuple[str, str], ...] = ()
    path: str = ""
    conf: NetConf | None = None

    @property
    def version(self) -> str:
        """The version of the reply: the config's, or the newest one without a config."""
        return self.conf.cni_version if self.conf is not None else SUPPORTED_VERSIONS[-1]


def parse_request(environ: Mapping[str, str], stdin: str) -> CniRequest:
    """Validate the environment and config of one call; raise CniError on the first problem."""
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(result.INVALID_ENVIRONMENT,
                       f"CNI_COMMAND {command!r} is invalid",
                       f"set CNI_COMMAND to one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        # VERSION needs no config; a runtime may still pass one, which is not checked.
        return CniRequest(command=command)

    conf = parse_netconf(stdin)
    if command in COMMANDS_SINCE_1_1 and conf.cni_version != "1.1.0":
        raise CniError(result.INCOMPATIBLE_VERSION,
                       f"{command} is not defined for cniVersion {conf.cni_version}",
                       "GC and STATUS need cniVersion 1.1.0 in the config list")
    if command == "CHECK" and conf.prev_result is None:
        raise CniError(result.INVALID_CONFIG, "prevResult is missing",
                       "CHECK needs the result of the ADD in prevResult")
    if command == "GC" and conf.valid_attachments is None:
        raise CniError(result.INVALID_CONFIG, f"{VALID_ATTACHMENTS_KEY} is missing",
                       "GC needs the list of attachments to keep, possibly empty")

    container_id = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    netns = environ.get("CNI_NETNS", "")
    if command in ATTACHMENT_COMMANDS:
        _check_variable("CNI_CONTAINERID", container_id, validate_container_id)
        _check_variable("CNI_IFNAME", ifname, validate_ifname)
        if command != "DEL" and not netns:
            raise CniError(result.INVALID_ENVIRONMENT, "CNI_NETNS is missing",
                           f"{command} needs the path of the container's network namespace")
    if netns and not netns.startswith("/"):
        raise CniError(result.INVALID_ENVIRONMENT, f"CNI_NETNS {netns!r} is not an absolute path",
                       "pass a path such as /run/netns/NAME or /proc/PID/ns/net")
    return CniRequest(command=command, container_id=container_id, netns=netns, ifname=ifname,
                      args=parse_args(environ.get("CNI_ARGS", "")),
                      path=environ.get("CNI_PATH", ""), conf=conf)


def parse_args(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``CNI_ARGS`` (``KEY=VALUE`` pairs separated by ';'); raise CniError if malformed."""
    pairs = []
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(result.INVALID_ENVIRONMENT, f"CNI_ARGS item {item!r} is invalid",
                           "write CNI_ARGS as KEY=VALUE pairs separated by ';'")
        pairs.append((key, value))
    return tuple(pairs)


def parse_netconf(text: str) -> NetConf:
    """Parse the JSON network config of one plugin; raise CniError naming the bad key."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CniError(result.DECODE_FAILED, "network config on stdin is not valid JSON",
                       f"{exc}; pass the plugin's entry of the config list") from None
    if not isinstance(doc, dict):
        raise CniError(result.DECODE_FAILED, "network config on stdin is not a JSON object",
                       "pass the plugin's entry of the config list as an object")

    version = doc.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(result.INVALID_CONFIG, "cniVersion is missing",
                       f"set cniVersion to one of {', '.join(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(result.INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported",
                       f"use one of {', '.join(SUPPORTED_VERSIONS)}")
    name = doc.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.fullmatch(name):
        raise CniError(result.INVALID_CONFIG, f"name {name!r} is invalid",
                       "use letters, digits, '_', '.' and '-', starting with a letter or digit")
    plugin_type = doc.get("type")
    if not isinstance(plugin_type, str) or not plugin_type:
        raise CniError(result.INVALID_CONFIG, f"type {plugin_type!r} is invalid",
                       "set type to the plugin's executable name, bgpnet-cni")

    subnet = _subnet(doc.get("subnet"))
    return NetConf(
        cni_version=version,
        name=name,
        type=plugin_type,
        bridge=_bridge(doc.get("bridge")),
        subnet=subnet,
        gateway=_gateway(doc.get("gateway"), subnet),
        mtu=_mtu(doc.get("mtu")),
        state_dir=_state_dir(doc.get("stateDir")),
        prev_result=_prev_result(doc.get("prevResult")),
        valid_attachments=_valid_attachments(doc.get(VALID_ATTACHMENTS_KEY)),
    )


def _check_variable(variable: str, value: str, validate) -> None:
    if not value:
        raise CniError(result.INVALID_ENVIRONMENT, f"{variable} is missing",
                       f"set {variable} in the plugin's environment")
    try:
        validate(value)
    except LeaseError as exc:
        raise CniError(result.INVALID_ENVIRONMENT, f"{variable} is invalid", str(exc)) from None


def _bridge(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _BRIDGE_NAME.fullmatch(value):
        raise CniError(result.INVALID_CONFIG, f"bridge {value!r} is invalid",
                       "use 1-15 letters, digits, '-', '_' or '.'")
    return value


def _subnet(value: object):
    if value is None:
        return None
    try:
        subnet = ipaddress.ip_network(value, strict=True) if isinstance(value, str) else None
    except ValueError as exc:
        raise CniError(result.INVALID_CONFIG, f"subnet {value!r} is invalid",
                       f"{exc}; write a prefix such as 10.244.1.0/24") from None
    if subnet is None:
        raise CniError(result.INVALID_CONFIG, f"subnet {value!r} is invalid",
                       "write a prefix such as 10.244.1.0/24 as a string")
    if subnet.num_addresses < 4:
        raise CniError(result.INVALID_CONFIG, f"subnet {value!r} is too small",
                       "use a prefix of /30 (IPv4) or /126 (IPv6) or shorter")
    return subnet


def _gateway(value: object, subnet):
    if value is None:
        return None
    if subnet is None:
        raise CniError(result.INVALID_CONFIG, "gateway is set without subnet",
                       "set subnet too, or remove gateway to use the node's gateway")
    try:
        gateway = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        gateway = None
    if gateway is None or gateway not in subnet or gateway in (subnet.network_address,
                                                                 subnet.broadcast_address):
        raise CniError(result.INVALID_CONFIG, f"gateway {value!r} is invalid",
                       f"use a host address inside subnet {subnet}")
    return gateway


def _mtu(value: object) -> int | None:
    if value is None:
        return None
    low, high = _MTU_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CniError(result.INVALID_CONFIG, f"mtu {value!r} is invalid",
                       f"use an integer from {low} to {high}")
    return value


def _state_dir(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise CniError(result.INVALID_CONFIG, f"stateDir {value!r} is invalid",
                       "use an absolute path such as /run/bgpnet")
    return value


def _prev_result(value: object) -> Mapping | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CniError(result.INVALID_CONFIG, "prevResult is not a JSON object",
                       "pass the result of the ADD unchanged")
    return value


def _valid_attachments(value: object) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return None
    fix = f'write {VALID_ATTACHMENTS_KEY} as a list of {{"containerID": ..., "ifname": ...}}'
    if not isinstance(value, list):
        raise CniError(result.INVALID_CONFIG, f"{VALID_ATTACHMENTS_KEY} is not a list", fix)
    pairs = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) \
                or not isinstance(item.get("ifname"), str):
            raise CniError(result.INVALID_CONFIG,
                           f"{VALID_ATTACHMENTS_KEY}[{index}] is invalid", fix)
        pairs.append((item["containerID"], item["ifname"]))
    return tuple(pairs)

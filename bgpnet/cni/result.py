"""The CNI plugin's output: results, errors and the version report, as JSON-ready dicts.

Role: the only place that knows the shape of what the plugin prints, so the direct
path and the agent's control socket print the same bytes. Pure: no I/O, standard
library only.

The shapes follow the CNI spec 1.1.0 ("Result", "Error", "Version"). Results for
cniVersion 0.4.0 also carry ``version`` ("4" or "6") in each IP entry, which 1.0.0
removed. Interfaces are listed as the reference ``bridge`` plugin lists them: the
bridge, the host end of the veth, then the container end with its ``sandbox``; the IP
entry points at the container end by index.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Error codes of the CNI spec ("Error" section); 1-99 are reserved for the spec.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
CONTAINER_UNKNOWN = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILED = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
# Plugin-specific codes (the spec leaves 100 and up to plugins).
CHECK_MISMATCH = 100
# The reference plugins answer 999 for failures that have no code of their own.
INTERNAL = 999


class CniError(Exception):
    """A failure to report on stdout as the spec's error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, version: str) -> dict:
        return error_dict(version, self.code, self.msg, self.details)


@dataclass(frozen=True)
class AddResult:
    """What ADD made: one veth pair on a bridge and one address in the container."""

    bridge: str
    bridge_mac: str
    host_ifname: str
    host_mac: str
    ifname: str
    mac: str
    sandbox: str
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address

    def to_dict(self, version: str) -> dict:
        """Return the spec's result object for ``version``."""
        ip = {"address": str(self.address), "gateway": str(self.gateway), "interface": 2}
        if version == "0.4.0":
            ip = {"version": str(self.address.version), **ip}
        default = "0.0.0.0/0" if self.address.version == 4 else "::/0"
        return {
            "cniVersion": version,
            "interfaces": [
                {"name": self.bridge, "mac": self.bridge_mac},
                {"name": self.host_ifname, "mac": self.host_mac},
                {"name": self.ifname, "mac": self.mac, "sandbox": self.sandbox},
            ],
            "ips": [ip],
            "routes": [{"dst": default, "gw": str(self.gateway)}],
            "dns": {},
        }


def error_dict(version: str, code: int, msg: str, details: str = "") -> dict:
    """Return the spec's error object; ``details`` is left out when empty."""
    error = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        error["details"] = details
    return error


def version_dict(supported: tuple[str, ...]) -> dict:
    """Return the VERSION report, written in the newest supported version."""
    return {"cniVersion": supported[-1], "supportedVersions": list(supported)}

"""The CNI plugin's output: results, errors and the version report, as JSON-ready dicts.

Role: the only place that defines the shape of what the plugin prints, so the direct
path and the agent's control socket print the same bytes. Pure: no I/O. The plugin
imports it on every call, so it imports only ``json`` at run time.

The shapes follow the CNI spec 1.1.0 ("Result", "Error", "Version"). Results for
cniVersion 0.4.0 also carry ``version`` ("4" or "6") in each IP entry, which 1.0.0
removed. Interfaces are listed as the reference ``bridge`` plugin lists them: the
bridge, the host end of the veth, then the container end with its ``sandbox``; the IP
entry points at the container end by index.
"""

from __future__ import annotations

import json

# typing costs about 4 ms to import; type checkers treat this constant like typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")

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
# The reference plugins return 999 for failures that have no code of their own.
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


def add_result_dict(version: str, *, bridge: str, bridge_mac: str, host_ifname: str,
                    host_mac: str, ifname: str, mac: str, sandbox: str,
                    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict:
    """Return the spec's ADD result for one veth pair on a bridge with one address."""
    ip = {"address": str(address), "gateway": str(gateway), "interface": 2}
    if version == "0.4.0":
        ip = {"version": str(address.version), **ip}
    default = "0.0.0.0/0" if address.version == 4 else "::/0"
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": bridge, "mac": bridge_mac},
            {"name": host_ifname, "mac": host_mac},
            {"name": ifname, "mac": mac, "sandbox": sandbox},
        ],
        "ips": [ip],
        "routes": [{"dst": default, "gw": str(gateway)}],
        "dns": {},
    }


def error_dict(version: str, code: int, msg: str, details: str = "") -> dict:
    """Return the spec's error object; ``details`` is left out when empty."""
    error = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        error["details"] = details
    return error


def version_dict() -> dict:
    """Return the VERSION report, written in the newest supported version."""
    return {"cniVersion": SUPPORTED_VERSIONS[-1], "supportedVersions": list(SUPPORTED_VERSIONS)}


def answer_version(config_text: str) -> str:
    """Return the config's cniVersion when it is supported, else the newest, for errors."""
    try:
        version = json.loads(config_text).get("cniVersion")
    except (ValueError, AttributeError):
        version = None
    return version if version in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]

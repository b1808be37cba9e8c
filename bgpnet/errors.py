"""Domain exceptions. Only ``bgpnet.cli`` turns them into exit statuses.

Messages name the action, the object and the cause, and for user errors the fix.
"""

from __future__ import annotations


class BgpnetError(Exception):
    """Base class of every error bgpnet raises on purpose."""


class ConfigError(BgpnetError):
    """A config value is invalid; the host has not been changed."""

    def __init__(self, field: str, value: object, problem: str, fix: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        self.fix = fix
        # A missing value has nothing to show: "node.name is missing; add node.name ...".
        shown = field if value is None else f"{field}: {value!r}"
        super().__init__(f"{shown} {problem}; {fix}")


class NodeSetupError(BgpnetError):
    """The node cannot be set up without changing something bgpnet does not own."""


class NetlinkError(BgpnetError):
    """A netlink request failed; ``errno`` is the kernel's error number."""

    def __init__(self, action: str, obj: str, errno: int, message: str = "") -> None:
        self.action = action
        self.obj = obj
        self.errno = errno
        detail = message or _strerror(errno)
        super().__init__(f"{action} {obj} failed: {detail} (errno {errno})")


class ExaBGPError(BgpnetError):
    """ExaBGP could not be started or kept running."""


class LeaseError(BgpnetError):
    """An address lease could not be reserved or released."""


class PoolExhausted(LeaseError):
    """Every address of the pod CIDR is leased."""


def _strerror(errno: int) -> str:
    import os

    return os.strerror(errno)


class LabError(BgpnetError):
    """A lab step failed: building, checking or tearing down namespaces and processes."""

"""Links, addresses and sysctls of the node and of pod namespaces.

Role: every netlink write that bgpnet makes, except the routes of its protocol. That
covers the node bridge, the pod veth pairs, the addresses and default route inside a
pod, and the forwarding sysctls. Node setup goes through pyroute2. The pod functions
run on every CNI ADD and DEL, so they use the struct-packed requests of
``bgpnet.kernel.rtnl``, which cost a small fraction of pyroute2's.

Rules:
- Everything runs in the calling process's network namespace, except functions that
  take a ``netns_path`` (a file such as ``/run/netns/NAME`` or ``/proc/PID/ns/net``).
  Those never create the namespace: a missing one is an error.
- ``ensure_*`` functions are idempotent. They read first, change only what differs,
  and return a list of the changes made (empty when nothing changed).
- pyroute2's ``NetlinkError`` and the errno of a failed ``rtnl`` request never leave
  this module. They become ``bgpnet.errors.NetlinkError`` naming the action and the
  object. A state that
  bgpnet must not overwrite (a foreign link or address) raises ``NodeSetupError``.
- Deletes tolerate "not found" on purpose, so teardown can be repeated.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bgpnet.errors import NetlinkError, NodeSetupError
from bgpnet.kernel import rtnl
from bgpnet.model import Address

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
T = TypeVar("T")

IFF_UP = 0x1  # include/uapi/linux/if.h
IFA_F_NODAD = 0x02  # include/uapi/linux/if_addr.h
RT_SCOPE_UNIVERSE = 0  # include/uapi/linux/rtnetlink.h
CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h

_libc = ctypes.CDLL(None, use_errno=True)

_FORWARDING_SYSCTL = {
    4: Path("/proc/sys/net/ipv4/ip_forward"),
    6: Path("/proc/sys/net/ipv6/conf/all/forwarding"),
}


def _new_iproute() -> IPRoute:
    # pyroute2 takes about 80 ms to import, so only node setup and rare pod paths
    # load it, and the CNI plugin's direct path starts faster.
    from pyroute2 import IPRoute

    return IPRoute()


def _pyroute2_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError

    return PyrouteNetlinkError


@contextmanager
def _netlink(action: str, obj: str) -> Iterator[None]:
    """Turn a pyroute2 NetlinkError raised inside the block into ours."""
    try:
        yield
    except _pyroute2_error() as exc:  # evaluated only when an exception propagates
        raise NetlinkError(action, obj, exc.code) from exc


@contextmanager
def _iproute(netns_path: str | None = None) -> Iterator[IPRoute]:
    """Open an rtnetlink socket in the current namespace or in ``netns_path``."""
    ipr = _new_iproute() if netns_path is None else _open_in_namespace(netns_path)
    try:
        yield ipr
    finally:
        ipr.close()


def _open_in_namespace(netns_path: str) -> IPRoute:
    """Open a pyroute2 rtnetlink socket in the namespace at ``netns_path``."""
    return _in_namespace(netns_path, _new_iproute)


def _in_namespace(netns_path: str, factory: Callable[[], T]) -> T:
    """Call ``factory`` (which opens a netlink socket) inside the namespace at ``netns_path``.

    The calling thread enters the namespace, creates the socket and returns. A netlink
    socket stays in the namespace it was created in. pyroute2's own ``netns=`` forks a
    helper process per socket instead, which costs about 8 ms in a large process.
    setns(2) changes only the calling thread, so the agent's other threads are not
    affected. The path is never created: a missing namespace is an error.
    """
    try:
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetlinkError("open network namespace", netns_path, exc.errno or errno.ENOENT) from exc
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, "enter network namespace", netns_path)
        try:
            return factory()
        finally:
            # NOTE: a failure here would leave this thread in the pod's namespace; it
            # is not expected, because entering the namespace we came from is allowed.
            _setns(original, "return to network namespace of thread", str(os.getpid()))
    finally:
        os.close(original)
        os.close(target)


def _setns(fd: int, action: str, obj: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise NetlinkError(action, obj, ctypes.get_errno())


# Reading links and addresses.


def _find_link(ipr: IPRoute, name: str):
    with _netlink("look up link", name):
        indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        return None
    with _netlink("read link", name):
        return ipr.link("get", index=indexes[0])[0]


def _link_kind(link) -> str:
    info = link.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info is not None else None
    return kind or "device"


def _link_addresses(ipr: IPRoute, index: int, version: int) -> list[Interface]:
    """Return the global-scope addresses of one family on link ``index``."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with _netlink("read addresses of link index", str(index)):
        messages = ipr.addr("dump", index=index, family=family)
    result = []
    for message in messages:
        if message["scope"] != RT_SCOPE_UNIVERSE:
            continue  # IPv6 link-local fe80::/64, which the kernel adds by itself
        address = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
        result.append(ipaddress.ip_interface(f"{address}/{message['prefixlen']}"))
    return result


def local_addresses() -> frozenset[Address]:
    """Return every address on every link of the current namespace, link-local included."""
    addresses = set()
    with _iproute() as ipr, _netlink("dump", "addresses"):
        for message in ipr.addr("dump"):
            address = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
            if address is not None:
                addresses.add(ipaddress.ip_address(address.split("%")[0]))
    return frozenset(addresses)


# The node bridge.


def bridge_mac(name: str, gateway: Interface) -> str:
    """Return a fixed MAC for the bridge, derived from its name and gateway address.

    Why a fixed MAC: a bridge without an assigned MAC takes the lowest MAC of its
    ports. It would change whenever a pod with a lower veth MAC starts or stops, and
    every pod's ARP entry for the gateway would go stale. A MAC given when the link is
    created is kept (the kernel marks it NET_ADDR_SET). Deriving it from the name and
    gateway keeps it the same when the bridge is created again after a reboot.
    """
    digest = hashlib.sha256(f"{name}/{gateway}".encode()).digest()
    # 0x02: locally administered, unicast (IEEE 802 first octet bits).
    octets = bytes([0x02]) + digest[:5]
    return ":".join(f"{octet:02x}" for octet in octets)


def ensure_bridge(name: str, gateway: Interface, mtu: int) -> list[str]:
    """Create or complete the bridge ``name`` with address ``gateway`` and ``mtu``.

    Returns the changes made, empty when the bridge was already as requested. Raises
    NodeSetupError when ``name`` is a link of another kind or already carries another
    address of the gateway's family. When this call created the bridge and a later
    step fails, the bridge is deleted again.
    """
    changes: list[str] = []
    with _iproute() as ipr:
        link = _find_link(ipr, name)
        created = False
        if link is None:
            _create_bridge(ipr, name, gateway, mtu)
            created = True
            changes.append(f"created bridge {name} mtu {mtu} mac {bridge_mac(name, gateway)}")
            link = _find_link(ipr, name)
        else:
            _check_existing_bridge(ipr, link, name, gateway)
        try:
            changes += _complete_bridge(ipr, link, name, gateway, mtu)
        except BaseException:
            if created:
                _delete_quietly(ipr, link["index"], name)
            raise
    for change in changes:
        log.info("bridge changed bridge=%s change=%r", name, change)
    return changes


def _create_bridge(ipr: IPRoute, name: str, gateway: Interface, mtu: int) -> None:
    # The MTU is given at creation because a bridge whose MTU was never set follows
    # the smallest MTU of its ports. Since kernel 4.17, a set MTU stays put.
    with _netlink("create bridge", name):
        ipr.link("add", ifname=name, kind="bridge", mtu=mtu,
                 address=bridge_mac(name, gateway))


def _check_existing_bridge(ipr: IPRoute, link, name: str, gateway: Interface) -> None:
    kind = _link_kind(link)
    if kind != "bridge":
        raise NodeSetupError(
            f"set up bridge {name} failed: link {name} exists and is a {kind}, not a bridge; "
            f"delete it (ip link del {name}) or set bridge.name to a free name")
    for present in _link_addresses(ipr, link["index"], gateway.version):
        if present != gateway:
            raise NodeSetupError(
                f"set up bridge {name} failed: it has address {present}, expected {gateway}; "
                f"remove it (ip addr del {present} dev {name}) or fix pod_cidr in the config")


def _complete_bridge(ipr: IPRoute, link, name: str, gateway: Interface, mtu: int) -> list[str]:
    changes = []
    index = link["index"]
    if gateway.version == 6:
        # The bridge is the pods' router. accept_ra=0 stops a pod from sending router
        # advertisements that would install a default route or address on the node.
        accept_ra = Path(f"/proc/sys/net/ipv6/conf/{name}/accept_ra")
        if not accept_ra.exists():
            # The kernel removes a link's IPv6 settings when its MTU is below 1280.
            raise NodeSetupError(
                f"set up bridge {name} failed: IPv6 is off on it ({accept_ra} is missing), "
                f"so it cannot carry gateway {gateway}; use an MTU of at least 1280 and "
                "make sure IPv6 is not disabled on the node")
        if _write_sysctl(accept_ra, "0"):
            changes.append("set accept_ra 0")
    if link.get("IFLA_MTU") != mtu:
        with _netlink("set mtu of bridge", name):
            ipr.link("set", index=index, mtu=mtu)
        changes.append(f"set mtu {link.get('IFLA_MTU')} -> {mtu}")
    if gateway not in _link_addresses(ipr, index, gateway.version):
        # NODAD: the gateway is usable at once instead of after IPv6 duplicate address
        # detection (about a second). The pod CIDR belongs to this node only.
        flags = IFA_F_NODAD if gateway.version == 6 else 0
        with _netlink("add address to bridge", f"{gateway} dev {name}"):
            ipr.addr("add", index=index, address=str(gateway.ip),
                     prefixlen=gateway.network.prefixlen, flags=flags)
        changes.append(f"added address {gateway}")
    if not link["flags"] & IFF_UP:
        with _netlink("bring up bridge", name):
            ipr.link("set", index=index, state="up")
        changes.append("brought up")
    return changes


def _delete_quietly(ipr: IPRoute, index: int, name: str) -> None:
    """Delete a link during rollback, logging instead of masking the original error."""
    try:
        ipr.link("del", index=index)
    except _pyroute2_error() as exc:
        log.warning("rollback failed link=%s action=delete errno=%d", name, exc.code)


# Sysctls.


def enable_forwarding(version: int) -> bool:
    """Turn on IPv4 or IPv6 forwarding in the current namespace; return True if it was off."""
    try:
        path = _FORWARDING_SYSCTL[version]
    except KeyError:
        raise ValueError(f"IP version {version!r} is invalid: use 4 or 6") from None
    changed = _write_sysctl(path, "1")
    if changed:
        log.info("forwarding enabled version=%d", version)
    return changed


def _write_sysctl(path: Path, value: str) -> bool:
    """Write ``value`` to a /proc/sys file unless it already has it; return whether it changed.

    /proc/sys/net shows the namespace of the process that opens it, so this works
    under nsenter as well as under ``ip netns exec``.
    """
    try:
        if path.read_text().strip() == value:
            return False
        path.write_text(f"{value}\n")
    except OSError as exc:
        raise NodeSetupError(
            f"write {value} to {path} failed: {exc.strerror} (errno {exc.errno}); "
            "run as root in the node's network namespace, with /proc/sys writable") from exc
    return True


# Veth pairs for pods. These run once or twice per pod operation, so they use the
# struct-packed requests of ``rtnl`` instead of pyroute2 (see that module for the cost).


@contextmanager
def _rtnl(netns_path: str | None = None) -> Iterator[rtnl.Rtnl]:
    """Open a struct-packed rtnetlink socket here or in the namespace at ``netns_path``."""
    sock = rtnl.Rtnl() if netns_path is None else _in_namespace(netns_path, rtnl.Rtnl)
    try:
        yield sock
    finally:
        sock.close()


def _get_link(sock: rtnl.Rtnl, name: str) -> rtnl.Link | None:
    try:
        return sock.get_link(name)
    except OSError as exc:
        raise NetlinkError("read link", name, exc.errno or errno.EIO) from exc


def _check(codes: list[int], actions: list[tuple[str, str]]) -> None:
    """Raise NetlinkError for the first failed request of a batch."""
    for code, (action, obj) in zip(codes, actions):
        if code:
            raise NetlinkError(action, obj, code)


def create_veth(host_ifname: str, pod_ifname: str, netns_path: str, mtu: int) -> None:
    """Create a veth pair: ``host_ifname`` here, ``pod_ifname`` directly in ``netns_path``.

    Creating the pod end inside the pod namespace, instead of moving it there, means a
    failure never leaves a link named ``pod_ifname`` in the node namespace.
    """
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetlinkError("open network namespace", netns_path, exc.errno or errno.ENOENT) from exc
    try:
        with _rtnl() as sock:
            codes = sock.transact([rtnl.new_veth(host_ifname, pod_ifname, fd, mtu)])
        _check(codes, [("create veth", f"{host_ifname} peer {pod_ifname}")])
    finally:
        os.close(fd)


def attach_to_bridge(ifname: str, bridge: str) -> None:
    """Make ``ifname`` a port of ``bridge`` with hairpin mode on, and bring it up."""
    with _rtnl() as sock:
        link = _get_link(sock, ifname)
        master = _get_link(sock, bridge)
        if link is None:
            raise NetlinkError("attach link to bridge", ifname, errno.ENODEV)
        if master is None:
            raise NetlinkError("attach link to bridge", bridge, errno.ENODEV)
        # Hairpin lets a frame leave through the port it came in on. A pod that reaches
        # itself through a service address (after DNAT on the node) needs it. The port
        # exists only once the master is set, which the first request of the batch does.
        codes = sock.transact([rtnl.set_link(link.index, up=True, master=master.index),
                               rtnl.set_hairpin(link.index)])
    _check(codes, [("attach link to bridge", f"{ifname} master {bridge}"),
                   ("set hairpin mode on port", ifname)])


def pod_link_exists(netns_path: str, ifname: str) -> bool:
    """Return whether the namespace at ``netns_path`` has a link named ``ifname``."""
    with _rtnl(netns_path) as sock:
        return _get_link(sock, ifname) is not None


def configure_pod_link(netns_path: str, ifname: str, address: Interface,
                       gateway: Address) -> str:
    """Bring up loopback and ``ifname`` in the pod, add ``address`` and a default route.

    Returns the MAC address of ``ifname``. A default route via ``gateway`` that already
    exists is kept, because a second interface of the same pod on the same bridge finds
    the route of the first one. A default route via another gateway is an error.
    """
    where = f"{ifname} in {netns_path}"
    with _rtnl(netns_path) as sock:
        link = _get_link(sock, ifname)
        loopback = _get_link(sock, "lo")
        if link is None:
            raise NetlinkError("configure pod link", where, errno.ENODEV)
        # NODAD: the pod address comes from our lease store, so it is unique and DAD
        # would only delay the pod's first packets by about a second.
        flags = IFA_F_NODAD if address.version == 6 else 0
        requests = [rtnl.new_address(link.index, address, flags),
                    rtnl.set_link(link.index, up=True),
                    rtnl.new_default_route(link.index, gateway)]
        actions = [("add address", f"{address} to {where}"), ("bring up link", where),
                   ("add default route", f"via {gateway} in {netns_path}")]
        if loopback is not None:
            requests.insert(0, rtnl.set_link(loopback.index, up=True))
            actions.insert(0, ("bring up loopback in", netns_path))
        codes = sock.transact(requests)
    if codes[-1] == errno.EEXIST and _has_default_route(netns_path, link.index, gateway):
        codes[-1] = 0
    _check(codes, actions)
    return link.mac


def _has_default_route(netns_path: str, index: int, gateway: Address) -> bool:
    """Return whether the namespace has a default route via ``gateway`` (a rare path)."""
    family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
    with _iproute(netns_path) as ipr, _netlink("read default routes in", netns_path):
        routes = ipr.route("dump", family=family, dst_len=0)
    return any(route.get("RTA_GATEWAY") == str(gateway) for route in routes)


def link_macs(*names: str) -> dict[str, str | None]:
    """Return the MAC address of each named link of the current namespace, None if missing."""
    with _rtnl() as sock:
        macs = {}
        for name in names:
            link = _get_link(sock, name)
            macs[name] = link.mac if link is not None else None
        return macs


@dataclass(frozen=True)
class PodLink:
    """A pod interface as the kernel reports it: MAC, global addresses, default gateways."""

    mac: str
    addresses: tuple[Interface, ...]
    default_gateways: tuple[Address, ...]


def read_pod_link(netns_path: str, ifname: str) -> PodLink | None:
    """Read ``ifname`` in the namespace at ``netns_path``; return None if it does not exist."""
    with _iproute(netns_path) as ipr:
        link = _find_link(ipr, ifname)
        if link is None:
            return None
        index = link["index"]
        addresses = [*_link_addresses(ipr, index, 4), *_link_addresses(ipr, index, 6)]
        gateways = []
        for family in (socket.AF_INET, socket.AF_INET6):
            with _netlink("read default routes in", netns_path):
                routes = ipr.route("dump", family=family, dst_len=0)
            for route in routes:
                if route.get("RTA_OIF") == index and route.get("RTA_GATEWAY"):
                    gateways.append(ipaddress.ip_address(route.get("RTA_GATEWAY")))
        return PodLink(mac=link.get("IFLA_ADDRESS"), addresses=tuple(addresses),
                       default_gateways=tuple(gateways))


def delete_link(ifname: str, kind: str | None = None) -> bool:
    """Delete ``ifname`` from the current namespace; return False if it did not exist.

    With ``kind``, a link of another kind raises NodeSetupError and is left alone.
    """
    with _rtnl() as sock:
        link = _get_link(sock, ifname)
        if link is None:
            return False
        if kind is not None and link.kind != kind:
            raise NodeSetupError(
                f"delete link {ifname} failed: it is a {link.kind}, expected a {kind}; "
                "bgpnet did not create it, so remove it by hand if it is not needed")
        [code] = sock.transact([rtnl.del_link(link.index)])
    # ENODEV: someone deleted it between the lookup and now, which is the goal.
    if code == errno.ENODEV:
        return False
    if code:
        raise NetlinkError("delete link", ifname, code)
    return True

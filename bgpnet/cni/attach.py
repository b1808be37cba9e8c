"""Attach a pod's network namespace to the node bridge, and detach it again.

Role: the pod-side work that the CNI plugin performs on ADD and DEL, and that the lab
runs now through the small CLI at the bottom. It runs in the node's network namespace
and composes the lease store (``bgpnet.cni.ipam``) with the link functions of
``bgpnet.kernel.links``.

Rules:
- ADD creates everything or nothing: when a step fails, the veth and the lease that
  this call created are removed before the error is raised. A lease or veth that
  existed before the call is never removed by its rollback.
- DEL is idempotent: a missing veth, lease or namespace counts as already deleted.
- The host end of the veth is named from the container id and interface name, so DEL
  finds it without reading anything the pod could have changed.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bgpnet import nodestate
from bgpnet.cni.ipam import LeaseStore, validate_container_id, validate_ifname
from bgpnet.errors import BgpnetError, NodeSetupError
from bgpnet.kernel import links
from bgpnet.model import Address
from bgpnet.nodestate import NodeState

log = logging.getLogger(__name__)

LEASE_DIRECTORY = "leases"


@dataclass(frozen=True)
class PodAttachment:
    """The result of attaching one pod interface to the node bridge."""

    container_id: str
    ifname: str
    host_ifname: str
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: Address
    mac: str

    def to_json(self) -> str:
        return json.dumps({
            "container_id": self.container_id,
            "ifname": self.ifname,
            "host_ifname": self.host_ifname,
            "address": str(self.address),
            "gateway": str(self.gateway),
            "mac": self.mac,
        })


def host_ifname(container_id: str, ifname: str) -> str:
    """Return the node-side veth name: "veth" and 11 hex digits of a hash, 15 bytes in all."""
    # The NUL keeps ("pod1", "eth0") and ("pod", "1eth0") apart; neither id may contain it.
    digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
    return "veth" + digest[:11]


def lease_store(state_dir: Path, state: NodeState, network: str | None = None) -> LeaseStore:
    """Return the lease store for the node's pod CIDR.

    The leases are in ``<state_dir>/leases``, or in ``<state_dir>/leases/<network>`` for
    a named CNI network. The caller validates ``network`` (the CNI plugin does).
    """
    directory = state_dir / LEASE_DIRECTORY
    if network is not None:
        directory = directory / network
    return LeaseStore(directory, state.pod_cidr, state.gateway)


def add_pod(state: NodeState, leases: LeaseStore, container_id: str, netns_path: str,
            ifname: str = "eth0") -> PodAttachment:
    """Give the pod in ``netns_path`` an interface ``ifname`` on the node bridge.

    Reserves an address, creates the veth pair with its pod end inside the pod's
    namespace, attaches the host end to the bridge and configures the pod end with
    the address and a default route via the gateway. Raises NodeSetupError when
    ``ifname`` already exists in the pod, and rolls back and re-raises on any failure.
    """
    validate_container_id(container_id)
    validate_ifname(ifname)
    if not os.path.exists(netns_path):
        raise NodeSetupError(f"add pod container_id={container_id} failed: network namespace "
                             f"{netns_path} not found; pass the path of the pod's namespace")
    if links.pod_link_exists(netns_path, ifname):
        raise NodeSetupError(f"add pod container_id={container_id} failed: interface {ifname} "
                             f"already exists in {netns_path}; delete it or pick another ifname")

    veth = host_ifname(container_id, ifname)
    had_lease = leases.find(container_id, ifname) is not None
    lease = leases.reserve(container_id, ifname)
    veth_created = False
    try:
        links.create_veth(veth, ifname, netns_path, state.mtu)
        veth_created = True
        links.attach_to_bridge(veth, state.bridge)
        mac = links.configure_pod_link(netns_path, ifname, lease.address, state.gateway)
    except BgpnetError as exc:
        _roll_back(leases, container_id, ifname, veth if veth_created else None, not had_lease)
        raise NodeSetupError(f"add pod container_id={container_id} ifname={ifname} failed: "
                             f"{exc}; the veth and lease that this attempt created were removed") from exc
    except BaseException:
        _roll_back(leases, container_id, ifname, veth if veth_created else None, not had_lease)
        raise

    attachment = PodAttachment(container_id=container_id, ifname=ifname, host_ifname=veth,
                               address=lease.address, gateway=state.gateway, mac=mac)
    log.info("pod added node=%s container_id=%s ifname=%s host_ifname=%s address=%s",
             state.node, container_id, ifname, veth, lease.address)
    return attachment


def _roll_back(leases: LeaseStore, container_id: str, ifname: str, veth: str | None,
               release_lease: bool) -> None:
    """Undo a failed ADD, logging (not raising) errors so the original error is kept."""
    if veth is not None:
        try:
            links.delete_link(veth, kind="veth")
        except BgpnetError as exc:
            log.warning("rollback failed container_id=%s link=%s error=%s", container_id, veth, exc)
    if release_lease:
        try:
            leases.release(container_id, ifname)
        except (BgpnetError, OSError) as exc:
            log.warning("rollback failed container_id=%s lease error=%s", container_id, exc)


def del_pod(state: NodeState, leases: LeaseStore, container_id: str, netns_path: str | None,
            ifname: str = "eth0") -> bool:
    """Delete the pod's veth pair and release its lease; return True if anything was removed.

    Deleting the host end removes the pod end with it, so ``netns_path`` is not needed
    and may be None, missing or an emptied namespace.
    """
    validate_container_id(container_id)
    validate_ifname(ifname)
    veth = host_ifname(container_id, ifname)
    removed_link = links.delete_link(veth, kind="veth")
    lease = leases.release(container_id, ifname)
    log.info("pod deleted node=%s container_id=%s ifname=%s host_ifname=%s netns=%s "
             "link_removed=%s lease_released=%s", state.node, container_id, ifname, veth,
             netns_path, removed_link, lease is not None)
    return removed_link or lease is not None


# Command line for the lab: run inside the node's network namespace.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bgpnet.cni.attach",
        description="Attach a pod network namespace to the node bridge, or detach it. "
                    "Run inside the node's network namespace.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("add", "create the pod interface and print it as JSON"),
                            ("del", "delete the pod interface and its lease")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--state-dir", required=True, type=Path,
                             help="directory with node.json, written by the agent")
        command.add_argument("--container-id", required=True, help="container id")
        command.add_argument("--netns", required=(name == "add"),
                             help="path of the pod's network namespace, e.g. /run/netns/NAME")
        command.add_argument("--ifname", default="eth0",
                             help="interface name inside the pod (default: eth0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return 0 on success and 1 after printing a one-line error."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        state = nodestate.read(args.state_dir)
    except FileNotFoundError as exc:
        print(f"error: read node state failed: {exc.filename} not found; "
              "start the agent or pass the right --state-dir", file=sys.stderr)
        return 1
    except (ValueError, KeyError) as exc:
        print(f"error: read node state in {args.state_dir} failed: invalid content ({exc!r}); "
              "restart the agent so it writes the file again", file=sys.stderr)
        return 1

    try:
        leases = lease_store(args.state_dir, state)
        if args.command == "add":
            attachment = add_pod(state, leases, args.container_id, args.netns, args.ifname)
            print(attachment.to_json())
        else:
            del_pod(state, leases, args.container_id, args.netns, args.ifname)
    except BgpnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {args.command} pod container_id={args.container_id} failed: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

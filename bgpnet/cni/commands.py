"""Carry out one validated CNI request: ADD, DEL, CHECK, GC and STATUS.

Role: the work behind the plugin. The agent runs ``execute`` when the plugin hands it
a request over the control socket, and the plugin runs it itself when no agent
replies. Both pass the node state they found, so both paths behave the same. This
module imports pyroute2 (through ``attach`` and ``links``), so the plugin imports it
only on its direct path.

Rules:
- ``execute`` returns the result as a dict (ADD) or None (commands that print
  nothing), and raises ``CniError`` with the spec's code for every failure.
- The node state is the agent's, with ``subnet``, ``gateway``, ``bridge`` and ``mtu``
  from the config laid over it. Without node state, ADD is "try again later" (the
  agent has not set up the node yet) unless the config names both subnet and bridge.
- Leases of network ``N`` are in ``<state_dir>/leases/N``.
- DEL never fails for something already gone: a missing namespace, veth or lease.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from bgpnet.cni import attach, check, result
from bgpnet.cni.ipam import LeaseStore
from bgpnet.cni.netconf import CniRequest, NetConf
from bgpnet.cni.result import CniError
from bgpnet.errors import BgpnetError, NetlinkError
from bgpnet.kernel import links
from bgpnet.nodestate import NodeState

log = logging.getLogger(__name__)

DEFAULT_MTU = 1500


def effective_state(state: NodeState | None, conf: NetConf) -> NodeState | None:
    """Lay the config's subnet, gateway, bridge and MTU over the node state.

    Returns None when there is no node state and the config does not name both a
    subnet and a bridge.
    """
    if state is None:
        if conf.subnet is None or conf.bridge is None:
            return None
        state = NodeState(node=os.uname().nodename, pod_cidr=conf.subnet,
                          gateway=_first_host(conf.subnet), bridge=conf.bridge,
                          mtu=DEFAULT_MTU)
    changes = {}
    if conf.subnet is not None:
        changes["pod_cidr"] = conf.subnet
        changes["gateway"] = conf.gateway or _first_host(conf.subnet)
    if conf.bridge is not None:
        changes["bridge"] = conf.bridge
    if conf.mtu is not None:
        changes["mtu"] = conf.mtu
    return dataclasses.replace(state, **changes)


def execute(request: CniRequest, state: NodeState | None, state_dir: Path) -> dict | None:
    """Run ``request`` against the node described by ``state``; see the module rules."""
    assert request.conf is not None, "VERSION is handled before a request gets here"
    handler = _HANDLERS[request.command]
    node = effective_state(state, request.conf)
    try:
        return handler(request, node, state_dir)
    except CniError:
        raise
    except (BgpnetError, OSError) as exc:
        raise CniError(result.INTERNAL, f"{request.command} failed for container "
                       f"{request.container_id or '-'}", str(exc)) from exc


def _add(request: CniRequest, node: NodeState | None, state_dir: Path) -> dict:
    if node is None:
        raise CniError(result.TRY_AGAIN_LATER, "node state not found",
                       f"no agent replied and {state_dir}/node.json is missing; start the "
                       "agent, or set stateDir, or set subnet and bridge in the config")
    if not os.path.exists(request.netns):
        raise CniError(result.CONTAINER_UNKNOWN, f"network namespace {request.netns} not found",
                       "pass the path of an existing namespace in CNI_NETNS")
    leases = _leases(state_dir, node, request.conf)
    attachment = attach.add_pod(node, leases, request.container_id, request.netns,
                                request.ifname)
    try:
        macs = links.link_macs(node.bridge, attachment.host_ifname)
    except BaseException:
        # ADD must leave nothing behind when it fails: undo the attachment.
        attach.del_pod(node, leases, request.container_id, request.netns, request.ifname)
        raise
    return result.add_result_dict(
        request.version, bridge=node.bridge, bridge_mac=macs[node.bridge] or "",
        host_ifname=attachment.host_ifname, host_mac=macs[attachment.host_ifname] or "",
        ifname=request.ifname, mac=attachment.mac, sandbox=request.netns,
        address=attachment.address, gateway=attachment.gateway)


def _del(request: CniRequest, node: NodeState | None, state_dir: Path) -> None:
    if node is None:
        # NOTE: without node state the pool is unknown, so a lease cannot be found and
        # stays. The state directory is on /run, so both go away together in practice.
        removed = links.delete_link(attach.host_ifname(request.container_id, request.ifname),
                                    kind="veth")
        log.warning("pod deleted without node state container_id=%s ifname=%s "
                    "link_removed=%s state_dir=%s", request.container_id, request.ifname,
                    removed, state_dir)
        return None
    leases = _leases(state_dir, node, request.conf)
    attach.del_pod(node, leases, request.container_id, request.netns or None, request.ifname)
    return None


def _check(request: CniRequest, node: NodeState | None, state_dir: Path) -> None:
    if node is None:
        raise CniError(result.TRY_AGAIN_LATER, "node state not found",
                       f"no agent replied and {state_dir}/node.json is missing")
    if not os.path.exists(request.netns):
        raise CniError(result.CONTAINER_UNKNOWN, f"network namespace {request.netns} not found",
                       "the container's namespace is gone; delete the container")
    try:
        expected = check.expected_from_prev_result(request.conf.prev_result, request.ifname,
                                                   request.netns)
    except ValueError as exc:
        raise CniError(result.INVALID_CONFIG, "prevResult is invalid", str(exc)) from None

    pod_link = links.read_pod_link(request.netns, request.ifname)
    lease = _leases(state_dir, node, request.conf).find(request.container_id, request.ifname)
    host = attach.host_ifname(request.container_id, request.ifname)
    observed = check.Observed(
        link_present=pod_link is not None,
        mac=pod_link.mac if pod_link else None,
        addresses=pod_link.addresses if pod_link else (),
        default_gateways=pod_link.default_gateways if pod_link else (),
        lease=lease.address if lease else None,
        host_link_present=links.link_macs(host)[host] is not None,
    )
    found = check.differences(expected, observed, request.ifname)
    if found:
        raise CniError(result.CHECK_MISMATCH,
                       f"container {request.container_id} differs from prevResult",
                       "; ".join(found))
    return None


def _gc(request: CniRequest, node: NodeState | None, state_dir: Path) -> None:
    if node is None:
        log.warning("gc skipped: node state not found state_dir=%s", state_dir)
        return None
    keep = set(request.conf.valid_attachments or ())
    leases = _leases(state_dir, node, request.conf)
    failures = []
    for lease in leases.leases():
        if (lease.container_id, lease.ifname) in keep:
            continue
        try:
            attach.del_pod(node, leases, lease.container_id, None, lease.ifname)
        except BgpnetError as exc:
            failures.append(f"{lease.container_id}/{lease.ifname}: {exc}")
        else:
            log.info("gc released node=%s container_id=%s ifname=%s address=%s", node.node,
                     lease.container_id, lease.ifname, lease.address)
    if failures:
        raise CniError(result.INTERNAL, f"GC failed for {len(failures)} attachments",
                       "; ".join(failures))
    return None


def _status(request: CniRequest, node: NodeState | None, state_dir: Path) -> None:
    if node is None:
        raise CniError(result.NOT_AVAILABLE, "node state not found",
                       f"no agent replied and {state_dir}/node.json is missing; start the agent")
    try:
        bridge_present = links.link_macs(node.bridge)[node.bridge] is not None
    except NetlinkError as exc:
        raise CniError(result.NOT_AVAILABLE, f"bridge {node.bridge} cannot be read",
                       str(exc)) from exc
    if not bridge_present:
        raise CniError(result.NOT_AVAILABLE, f"bridge {node.bridge} not found",
                       "the agent has not set up the node; start or restart it")
    leases = _leases(state_dir, node, request.conf)
    # The network, gateway and last address are never leased.
    capacity = node.pod_cidr.num_addresses - 3
    used = len(leases.leases())
    if used >= capacity:
        raise CniError(result.NOT_AVAILABLE, f"pool {node.pod_cidr} has no free address",
                       f"{used} of {capacity} addresses are leased; delete pods")
    return None


def _leases(state_dir: Path, node: NodeState, conf: NetConf) -> LeaseStore:
    return attach.lease_store(state_dir, node, network=conf.name)


def _first_host(subnet):
    return next(iter(subnet.hosts()))


_HANDLERS = {"ADD": _add, "DEL": _del, "CHECK": _check, "GC": _gc, "STATUS": _status}

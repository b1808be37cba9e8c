"""Faults in the tor lab: ExaBGP killed, the route reflector's bgpd killed, a link flapping.

Correctness is asserted through the kernels of the nodes (``ip -j route``): which
routes stay, which go and that all of them come back. Lost pings and recovery times
are measured and reported, not asserted.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.integration.labkit import (CONVERGE_TIMEOUT, NODE_ADDRESSES, POD_CIDRS, RouteWatch,
                                      edit_yaml, learned, pinging, poll, report, run, tor_lab)

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/lib/frr/bgpd").exists():
    pytest.skip("needs root, iproute2 and FRR", allow_module_level=True)

NODE = "node01"


def _all_routes(lab) -> dict[str, set[str]]:
    return {lab.ns(node): lab.expected_routes(node) for node in POD_CIDRS}


def _ping_pairs(lab) -> list[tuple[str, str]]:
    into, _ = lab.pod("node02")
    out_of, node01_pod = lab.pod(NODE)
    _, node03_pod = lab.pod("node03")
    return [(into, node01_pod), (out_of, node03_pod)]


def _tor_session(lab, address: str) -> str:
    import json

    output = lab.vtysh(f"show bgp neighbors {address} json")
    return json.loads(output).get(address, {}).get("bgpState", "")


# -- ExaBGP killed ------------------------------------------------------------------


def test_exabgp_kill_keeps_routes(tmp_path, record_property):
    with tor_lab(tmp_path) as lab:
        [old] = lab.exabgp_pids(NODE)
        with pinging(_ping_pairs(lab)) as pingers, RouteWatch(_all_routes(lab)) as watch:
            assert poll(lambda: watch.samples >= 10, 10.0)
            killed_at = time.monotonic()
            os.kill(old, signal.SIGKILL)
            assert poll(lambda: lab.exabgp_pids(NODE) not in ([], [old]), 30.0), \
                "ExaBGP was not started again"
            restarted = time.monotonic() - killed_at
            assert poll(lambda: _tor_session(lab, NODE_ADDRESSES[NODE]) == "Established", 30.0)
            assert poll(lambda: watch.samples >= 60, 30.0)
            lost = sum(pinger.stop() for pinger in pingers)
        report(record_property, "exabgp_kill_lost_pings", lost)
        report(record_property, "exabgp_kill_restart_seconds", round(restarted, 2))
        assert watch.missing == []
        assert len(lab.exabgp_pids(NODE)) == 1
        assert lab.converged()


# -- the route reflector's bgpd killed ----------------------------------------------


def _peer_node01_node02(configs: Path) -> None:
    """Add a direct session node01 -> node02 beside the reflector (node02 passive)."""
    edit_yaml(configs / "node01.yaml", lambda data: data["peers"].append(
        {"name": "node02", "address": NODE_ADDRESSES["node02"], "asn": 64512}))
    edit_yaml(configs / "node02.yaml", lambda data: data["peers"].append(
        {"name": "node01", "address": NODE_ADDRESSES["node01"], "asn": 64512, "passive": True}))


def test_bgpd_kill_removes_only_its_routes(tmp_path, record_property):
    with tor_lab(tmp_path, edit=_peer_node01_node02) as lab:
        bgpd = int((lab.tor_dir() / "bgpd.pid").read_text())
        # What the direct node01-node02 session alone carries.
        direct = {lab.ns("node01"): {POD_CIDRS["node02"]}, lab.ns("node02"): {POD_CIDRS["node01"]}}
        with RouteWatch(direct) as watch:
            assert poll(lambda: watch.samples >= 10, 10.0)
            killed_at = time.monotonic()
            os.kill(bgpd, signal.SIGKILL)
            assert poll(lambda: POD_CIDRS["node03"] not in learned(lab.ns(NODE)), 30.0), \
                "routes learned from the reflector stayed after its bgpd died"
            removed = time.monotonic() - killed_at
            assert poll(lambda: learned(lab.ns("node03")) == {}, 30.0)
            # The reflector's routes are gone everywhere; the direct session's stay.
            assert set(learned(lab.ns("node01"))) == {POD_CIDRS["node02"]}
            assert set(learned(lab.ns("node02"))) == {POD_CIDRS["node01"]}

            lab.start_bgpd()
            assert poll(lab.converged, CONVERGE_TIMEOUT), "routes did not come back"
        report(record_property, "bgpd_kill_removal_seconds", round(removed, 2))
        assert watch.missing == []
        assert learned(lab.ns(NODE)) == {POD_CIDRS["node02"]: (NODE_ADDRESSES["node02"],),
                                         POD_CIDRS["node03"]: (NODE_ADDRESSES["node03"],)}


# -- the link between node01 and the segment goes down ------------------------------


def _set_port(lab, state: str) -> None:
    run(["ip", "-n", lab.ns("br-bgpnet"), "link", "set", f"{NODE}-eth1", state])


def test_short_link_flap_keeps_routes(tmp_path, record_property):
    # Down for about one second, far less than the hold time (9 s, set by tor).
    with tor_lab(tmp_path) as lab:
        with pinging(_ping_pairs(lab)) as pingers, RouteWatch(_all_routes(lab)) as watch:
            assert poll(lambda: watch.samples >= 10, 10.0)
            _set_port(lab, "down")
            start = watch.samples
            assert poll(lambda: watch.samples >= start + 50, 10.0)
            _set_port(lab, "up")
            assert poll(lambda: watch.samples >= start + 100, 10.0)
            lost = sum(pinger.stop() for pinger in pingers)
        report(record_property, "short_link_flap_lost_pings", lost)
        assert watch.missing == []
        assert _tor_session(lab, NODE_ADDRESSES[NODE]) == "Established"


def test_long_link_flap_withdraws_and_restores(tmp_path, record_property):
    # Down until the hold timer (9 s) expires: the node's routes must be withdrawn, and
    # come back once the link is up again.
    with tor_lab(tmp_path) as lab:
        _set_port(lab, "down")
        down_at = time.monotonic()
        assert poll(lambda: POD_CIDRS[NODE] not in learned(lab.ns("node02")), 30.0), \
            "node01's pod CIDR stayed on node02 with node01 unreachable"
        withdrawn = time.monotonic() - down_at
        assert poll(lambda: learned(lab.ns(NODE)) == {}, 30.0), \
            "node01 kept routes learned over a session that timed out"
        _set_port(lab, "up")
        up_at = time.monotonic()
        assert poll(lab.converged, CONVERGE_TIMEOUT), "routes did not come back after link up"
        restored = time.monotonic() - up_at
        report(record_property, "long_link_flap_withdraw_seconds", round(withdrawn, 2))
        report(record_property, "long_link_flap_restore_seconds", round(restored, 2))
        assert lab.converged()

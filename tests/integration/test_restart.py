"""Agent restarts in the tor lab while pods ping each other across nodes.

Each test restarts node01's agent (SIGTERM, SIGKILL, or twice within the restart time)
while two pingers run at 50 pings per second: node02-pod1 -> node01-pod1 (needs tor to
keep node01's pod CIDR) and node01-pod1 -> node03-pod1 (needs node01's kernel to keep
its learned routes). The correctness properties are asserted: the routes stay in the
kernel of every node throughout, and the restarted agent ends with exactly the right
routes after its start-up sweep. Lost pings are measured and reported, not asserted,
because they depend on scheduling. The last test drains node01 instead: its pod CIDR
must leave the other nodes and its own routes must go.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.integration.labkit import (BIN_DIR, CONVERGE_TIMEOUT, NODE_ADDRESSES, POD_CIDRS,
                                      RouteWatch, learned, pinging, poll, report, run, tor_lab)

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/lib/frr/bgpd").exists():
    pytest.skip("needs root, iproute2 and FRR", allow_module_level=True)

NODE = "node01"
SWEEP = "sweeping unconfirmed routes"


@pytest.fixture
def lab(tmp_path):
    with tor_lab(tmp_path) as running:
        yield running


def _expected(lab) -> dict[str, set[str]]:
    """Routes that must stay in each node's kernel while node01's agent restarts."""
    return {
        lab.ns(NODE): lab.expected_routes(NODE),
        lab.ns("node02"): {POD_CIDRS[NODE]},
        lab.ns("node03"): {POD_CIDRS[NODE]},
    }


def _exact(lab, node: str) -> dict[str, tuple[str, ...]]:
    return {POD_CIDRS[other]: (NODE_ADDRESSES[other],) for other in POD_CIDRS if other != node}


def _ping_pairs(lab) -> list[tuple[str, str]]:
    into, _ = lab.pod("node02")
    _, node01_pod = lab.pod(NODE)
    out_of, _ = lab.pod(NODE)
    _, node03_pod = lab.pod("node03")
    return [(into, node01_pod), (out_of, node03_pod)]


def _stop_and_wait(lab, sig: signal.Signals) -> None:
    lab.signal_agent(NODE, sig)
    assert lab.wait_agent_gone(NODE), f"agent still running after {sig.name}"


def _restart_under_pings(lab, record_property, label: str, restarts: list[signal.Signals]):
    sweeps_before = len(lab.log_lines(NODE, SWEEP))
    with pinging(_ping_pairs(lab)) as pingers, RouteWatch(_expected(lab)) as watch:
        assert poll(lambda: watch.samples >= 10, 10.0)
        for sig in restarts:
            _stop_and_wait(lab, sig)
            lab.start_agent(NODE)
        assert poll(lambda: len(lab.log_lines(NODE, SWEEP)) > sweeps_before, CONVERGE_TIMEOUT), \
            "restarted agent never finished its start-up sweep"
        # Let the pingers run past the sweep, so a route removed by it would show up.
        assert poll(lambda: watch.samples >= 10 + 50, 30.0)
        lost = [pinger.stop() for pinger in pingers]
        sent = sum(pinger.sent for pinger in pingers)
    report(record_property, f"{label}_lost_pings", sum(lost))
    report(record_property, f"{label}_sent_pings", sent)
    return watch, lost


def test_sigterm_restart_keeps_routes(lab, record_property):
    watch, _lost = _restart_under_pings(lab, record_property, "sigterm_restart", [signal.SIGTERM])
    assert watch.missing == []
    assert learned(lab.ns(NODE)) == _exact(lab, NODE)


def test_sigkill_restart_keeps_routes(lab, record_property):
    watch, _lost = _restart_under_pings(lab, record_property, "sigkill_restart", [signal.SIGKILL])
    assert watch.missing == []
    assert learned(lab.ns(NODE)) == _exact(lab, NODE)
    assert len(lab.exabgp_pids(NODE)) == 1


def test_double_restart_keeps_routes(lab, record_property):
    # Two restarts back to back, the second long before the restart time (120 s) ends.
    watch, _lost = _restart_under_pings(lab, record_property, "double_restart",
                                        [signal.SIGTERM, signal.SIGTERM])
    assert watch.missing == []
    assert learned(lab.ns(NODE)) == _exact(lab, NODE)
    assert poll(lab.converged, CONVERGE_TIMEOUT)


def test_drain_withdraws_and_removes(lab):
    state = lab.runtime(NODE)
    result = run(["ip", "netns", "exec", lab.ns(NODE), str(BIN_DIR / "bgpnet"), "agent",
                  "--config", str(lab.configs / f"{NODE}.yaml"), "--state-dir", str(state),
                  "--drain"], check=False)
    assert result.returncode == 0, result.stderr
    assert lab.wait_agent_gone(NODE)
    assert learned(lab.ns(NODE)) == {}
    for other in ("node02", "node03"):
        assert poll(lambda: POD_CIDRS[NODE] not in learned(lab.ns(other)), CONVERGE_TIMEOUT), \
            f"{other} kept the drained node's pod CIDR"

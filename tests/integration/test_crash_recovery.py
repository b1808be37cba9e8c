"""An agent with 2,000 installed routes dies; the next start converges to exactly the right set.

A BIRD peer exports 2,000 static /28s inside the cluster CIDR. The agent is stopped
with SIGTERM and killed with SIGKILL one second later, or killed with SIGKILL at once.
While it is down, the peer's table changes: 200 of the routes go and 200 new ones
appear. The next agent must end with exactly the peer's current 2,000 routes: none
left over from the dead instance and none missing. The 1,800 routes that never
changed must stay in the kernel during the whole restart.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import time

import pytest

from tests.integration.labkit import Bird, RouteWatch, agent_pair, poll, report

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("bird") is None:
    pytest.skip("needs root and BIRD 2", allow_module_level=True)

PEER_NEXT_HOP = ("192.168.50.2",)


def _slash28s(start: str, count: int) -> list[str]:
    first = ipaddress.ip_network(start)
    base = int(first.network_address)
    return [str(ipaddress.ip_network((base + 16 * index, 28))) for index in range(count)]


KEPT = _slash28s("10.244.16.0/28", 1800)  # 10.244.16.0 - 10.244.128.127
GONE = _slash28s("10.244.160.0/28", 200)  # 10.244.160.0 - 10.244.172.127
NEW = _slash28s("10.244.192.0/28", 200)  # 10.244.192.0 - 10.244.204.127


@pytest.fixture
def node(netns, tmp_path):
    agent = agent_pair(netns, tmp_path / "node")
    agent.write_config(restart_time=30)
    bird = Bird(agent, {"kept": (KEPT, True), "gone": (GONE, True), "new": (NEW, False)})
    bird.start()
    yield agent, bird
    agent.kill()
    bird.stop()


@pytest.mark.parametrize("kill", ["sigterm_then_sigkill", "sigkill"])
def test_crash_converges_exactly(node, kill, record_property):
    agent, bird = node
    agent.start()
    before = {prefix: PEER_NEXT_HOP for prefix in KEPT + GONE}
    assert poll(lambda: agent.learned() == before, 60.0), "first start did not install 2,000 routes"

    if kill == "sigterm_then_sigkill":
        agent.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the scenario: SIGKILL one second after SIGTERM
    with_status = agent.process.poll()
    if with_status is None:
        agent.process.kill()
    agent.process.wait(10)
    report(record_property, f"{kill}_exited_before_sigkill", with_status is not None)

    # The dead agent's routes are still in the kernel, and the peer's table changes.
    assert agent.learned() == before
    bird.birdc("disable", "gone")
    bird.birdc("enable", "new")

    after = {prefix: PEER_NEXT_HOP for prefix in KEPT + NEW}
    sweeps = len(agent.log_lines("sweeping unconfirmed routes"))
    with RouteWatch({agent.namespace: KEPT}, interval=0.05) as watch:
        started_at = time.monotonic()
        agent.start()
        assert poll(lambda: agent.learned() == after, 60.0), \
            f"no exact convergence: {len(set(agent.learned()) - set(after))} extra, " \
            f"{len(set(after) - set(agent.learned()))} missing"
        converged = time.monotonic() - started_at
        assert poll(lambda: len(agent.log_lines("sweeping unconfirmed routes")) > sweeps, 60.0)
    report(record_property, f"{kill}_converge_seconds", round(converged, 2))
    assert watch.missing == []
    assert agent.learned() == after

"""``bgpnet agent`` with a malformed config leaves the node unchanged.

Each case of ``tests/unit/test_bad_configs.py`` is run as ``bgpnet agent --config BAD``
(without ``--check``) inside a fresh namespace that has a veth pair, an address and a
static default route. Asserted: exit status 2, a message naming the field, and the
same links, addresses, routes and forwarding sysctl afterwards, seen with ``ip -j``
and ``sysctl``; the config's state directory is never created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.integration.labkit import BIN_DIR, run
from tests.unit.test_bad_configs import CASES, LABELS, render

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2", allow_module_level=True)


def _snapshot(namespace: str) -> dict[str, str]:
    views = {
        "link": ["ip", "-n", namespace, "-j", "link", "show"],
        "addr": ["ip", "-n", namespace, "-j", "addr", "show"],
        "route4": ["ip", "-n", namespace, "-j", "-4", "route", "show", "table", "all"],
        "route6": ["ip", "-n", namespace, "-j", "-6", "route", "show", "table", "all"],
        "forwarding": ["ip", "netns", "exec", namespace, "sysctl", "-n", "net.ipv4.ip_forward"],
    }
    return {name: run(argv).stdout for name, argv in views.items()}


def _wait_carrier(namespace: str, timeout: float = 5.0) -> None:
    """Wait until every veth end is up and IPv6 duplicate address detection is over, so
    the snapshots do not catch the kernel's own changes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = json.loads(run(["ip", "-n", namespace, "-j", "link", "show", "type", "veth"]).stdout)
        addresses = json.loads(run(["ip", "-n", namespace, "-j", "addr", "show"]).stdout)
        tentative = [info for link in addresses for info in link.get("addr_info", [])
                     if info.get("tentative")]
        if links and all(link.get("operstate") == "UP" for link in links) and not tentative:
            return
        time.sleep(0.02)
    raise AssertionError(f"links in {namespace} not settled after {timeout} s")


@pytest.mark.parametrize("label,change,field", CASES, ids=LABELS)
def test_bad_config_changes_nothing(netns, tmp_path, label, change, field):
    namespace = netns("bgpt")
    # No duplicate address detection, so link-local addresses are final at once.
    run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
    run(["ip", "-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    run(["ip", "-n", namespace, "addr", "add", "192.168.1.11/24", "dev", "eth0"])
    run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
    run(["ip", "-n", namespace, "link", "set", "eth1", "up"])
    run(["ip", "-n", namespace, "route", "add", "default", "via", "192.168.1.1", "proto", "static"])
    _wait_carrier(namespace)
    state_dir = tmp_path / "state"
    path = tmp_path / "agent.yaml"
    path.write_text(render(change, state_dir))
    files_before = sorted(p.name for p in tmp_path.iterdir())
    before = _snapshot(namespace)

    result = subprocess.run(["ip", "netns", "exec", namespace, str(BIN_DIR / "bgpnet"), "agent",
                             "--config", str(path)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 2, result.stderr
    assert re.search(rf"invalid config: {re.escape(field)}[: ]", result.stderr)
    after = _snapshot(namespace)
    for view in before:
        assert after[view] == before[view], f"{view} changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before
    assert not state_dir.exists()

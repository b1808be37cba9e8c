"""Guards of the agent: a dead relay, a second agent, a stop without graceful restart.

Both run in a private copy of the tor lab (``labkit.tor_lab``) and are observed from
outside: routes with ``ip -j``, processes in ``/proc``, files in the state directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.labkit import (BIN_DIR, RouteWatch, learned, poll, processes_mentioning,
                                      tor_lab)

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/lib/frr/bgpd").exists():
    pytest.skip("needs root, iproute2 and FRR", allow_module_level=True)


def _relay_pids(lab, node: str) -> list[int]:
    socket = str(lab.runtime(node) / "exabgp.sock")
    return [pid for pid in processes_mentioning(socket) if "bgpnet.exabgp.relay" in _cmdline(pid)]


def _new_pid(pids: list[int], old: int) -> bool:
    return bool(pids) and old not in pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_relay_death_keeps_routes(tmp_path):
    with tor_lab(tmp_path) as lab:
        node01 = lab.ns("node01")
        expected = lab.expected_routes("node01")
        [exabgp_before] = lab.exabgp_pids("node01")
        [relay] = _relay_pids(lab, "node01")
        eors_before = len(lab.log_lines("node01", "end-of-rib received"))

        with RouteWatch({node01: expected}) as watch:
            os.kill(relay, signal.SIGKILL)
            assert poll(lambda: _new_pid(lab.exabgp_pids("node01"), exabgp_before), 30.0)
            # The new session's End-of-RIB means the routes were learned again.
            assert poll(lambda: len(lab.log_lines("node01", "end-of-rib received")) > eors_before,
                        30.0)

        assert watch.missing == []
        assert expected <= set(learned(node01))


def test_second_agent_refused(tmp_path):
    with tor_lab(tmp_path) as lab:
        state = lab.runtime("node02")
        first = lab.agent_pid("node02")
        argv = ["ip", "netns", "exec", lab.ns("node02"), str(BIN_DIR / "bgpnet"), "agent",
                "--config", str(lab.configs / "node02.yaml"), "--state-dir", str(state)]

        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)

        assert second.returncode == 1
        assert "another agent" in second.stderr
        assert "Traceback" not in second.stderr
        assert (state / "exabgp.sock").exists()
        assert lab.agent_pid("node02") == first
        assert lab.converged()


def _without_graceful_restart(configs: Path) -> None:
    path = configs / "node01.yaml"
    data = yaml.safe_load(path.read_text())
    data["graceful_restart"] = {"enabled": False}
    path.write_text(yaml.safe_dump(data))


def test_sigterm_without_graceful_restart(tmp_path):
    with tor_lab(tmp_path, edit=_without_graceful_restart) as lab:
        lab.signal_agent("node01", signal.SIGTERM)

        assert lab.wait_agent_gone("node01")
        assert learned(lab.ns("node01")) == {}
        assert poll(lambda: "10.244.1.0/24" not in learned(lab.ns("node02")), 10.0)
        assert lab.exabgp_pids("node01") == []

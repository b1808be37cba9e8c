"""A flood of 20,000 announce/withdraw changes for the same prefixes while netlink is slow.

An ExaBGP peer sends 200 rounds of changes to 100 prefixes (announce with one next
hop, announce with another, withdraw), 20,000 API commands in all, then one sentinel
prefix that marks the end, while every kernel
write of the agent first sleeps 0.3 s (``slow_writer_agent.py``). Both sides use a
hold time of 3 s, so an agent that stopped reading ExaBGP for 3 s would lose the
session. Asserted: the session never went down (seen by the peer's ExaBGP, and the
same TCP connection carries it from start to end), and the kernel ends with exactly
the routes of each prefix's last change. Reported: the prefix changes that reached the
RIB and the kernel writes they coalesced into.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.integration.labkit import (ExaBGPSource, agent_pair, established_connections, poll,
                                      report)

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2", allow_module_level=True)

SENTINEL = "10.244.200.0/28"  # announced last, so its arrival means the flood is through
PREFIXES = [str(ipaddress.ip_network((int(ipaddress.ip_address("10.244.128.0")) + 16 * i, 28)))
            for i in range(100)]
ROUNDS = 200
WRITE_DELAY = 0.3  # seconds each kernel write sleeps
HOLD_TIME = 3


def _change(round_index: int, prefix_index: int, next_hops: tuple[str, str]) -> tuple[str, str | None]:
    """Return (command, next hop after it, or None when withdrawn) for one change."""
    prefix = PREFIXES[prefix_index]
    step = (round_index + prefix_index) % 3
    if step == 2:
        return f"withdraw route {prefix} next-hop {next_hops[0]}", None
    return f"announce route {prefix} next-hop {next_hops[step]}", next_hops[step]


def _flood(next_hops: tuple[str, str]) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    commands = []
    final: dict[str, str | None] = {}
    for round_index in range(ROUNDS):
        for prefix_index, prefix in enumerate(PREFIXES):
            command, next_hop = _change(round_index, prefix_index, next_hops)
            commands.append(command)
            final[prefix] = next_hop
    expected = {prefix: (hop,) for prefix, hop in final.items() if hop is not None}
    commands.append(f"announce route {SENTINEL} next-hop {next_hops[0]}")
    expected[SENTINEL] = (next_hops[0],)
    return commands, expected


def _stays(condition, samples: int) -> bool:
    """Check ``condition`` ``samples`` times in a row, 20 ms apart."""
    for _ in range(samples):
        if not condition():
            return False
        time.sleep(0.02)
    return True


def test_flood_keeps_session_and_converges(netns, tmp_path, record_property):
    node = agent_pair(netns, tmp_path / "node")
    node.write_config(hold_time=HOLD_TIME)
    commands, expected = _flood((node.family.peer, node.family.peer_extra))
    assert len(commands) == 20_001
    # One round (100 commands) per 10 ms, so ExaBGP sends each round in its own UPDATEs.
    source = ExaBGPSource(node, commands, hold_time=HOLD_TIME, batch=len(PREFIXES), pause=0.01)
    record = tmp_path / "writes.txt"
    try:
        source.start()
        node.start([sys.executable, str(Path(__file__).with_name("slow_writer_agent.py")),
                    str(WRITE_DELAY), str(record)])
        assert poll(lambda: "up" in source.state_messages(), 60.0), "session never came up"
        connections = established_connections(node.peer_namespace)
        assert len(connections) == 1
        assert poll(source.done.exists, 60.0), "the source did not send its commands"
        assert poll(lambda: node.learned() == expected, 120.0), \
            f"kernel differs: {len(node.learned())} routes, {len(expected)} expected"
        assert _stays(lambda: node.learned() == expected, 50)
        states = source.state_messages()
        final_connections = established_connections(node.peer_namespace)
    finally:
        node.kill()
        source.stop()
    writes = [line.split() for line in record.read_text().splitlines()]
    report(record_property, "flood_changes", len(commands))
    report(record_property, "flood_kernel_writes", len(writes))
    report(record_property, "flood_changes_received", int(writes[-1][3]))
    report(record_property, "flood_routes_written", sum(int(word) for line in writes for word in line[:3]))
    assert "down" not in states
    assert states.count("up") == 1
    assert final_connections == connections

"""Malformed ExaBGP output through the agent's relay socket: valid lines still applied.

The agent runs with ``exabgp.command`` set to ``fake_exabgp.py``, which feeds the
stream of ``tests/unit/test_malformed_input.py`` (100 malformed lines and 20 unknown
message types mixed into valid UPDATEs) through the real relay into the agent.
Asserted through ``ip -j route``: exactly the valid routes are installed, including
the one from the last line; the agent is still running; and its metrics count the
100 malformed lines.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.integration.labkit import IPV4, AgentNode, learned, poll, run
from tests.unit.test_malformed_input import NEXT_HOP, _stream

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2", allow_module_level=True)

METRICS = ("import urllib.request; "
           "print(urllib.request.urlopen('http://127.0.0.1:9180/metrics', timeout=5).read().decode())")


def test_relay_stream_applied(netns, tmp_path):
    namespace = netns("bgpt")
    run(["ip", "-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    run(["ip", "-n", namespace, "addr", "add", "192.168.1.11/24", "dev", "eth0"])
    run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
    run(["ip", "-n", namespace, "link", "set", "eth1", "up"])

    stream, expected, bad = _stream(seed=5)
    (tmp_path / "lines.bin").write_bytes(stream)
    fake = tmp_path / "fake-exabgp"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} "
                    f"{Path(__file__).with_name('fake_exabgp.py')} {tmp_path / 'lines.bin'} \"$@\"\n")
    fake.chmod(0o755)

    node = AgentNode(namespace=namespace, peer_namespace=namespace, directory=tmp_path, family=IPV4)
    node.write_config(node={"name": "node01", "address": "192.168.1.11", "asn": 64512},
                      peers=[], http={"listen": "127.0.0.1:9180"},
                      exabgp={"command": str(fake)})
    try:
        node.start()
        want = {prefix: (NEXT_HOP,) for prefix in expected}
        assert poll(lambda: learned(namespace) == want, 30.0), \
            f"{len(learned(namespace))} routes, {len(want)} expected: {node.log_tail()}"
        alive = node.process.poll() is None
        metrics = run(["ip", "netns", "exec", namespace, sys.executable, "-c", METRICS]).stdout
    finally:
        node.kill()
    assert alive
    match = re.search(r"^bgpnet_malformed_lines_total\{[^}]*\} (\d+)$", metrics, re.MULTILINE)
    assert match is not None
    assert int(match.group(1)) == bad

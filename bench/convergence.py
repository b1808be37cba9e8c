"""Cluster convergence in the three-node lab: agent start until every other node has its route.

A copy of ``containerlab/bgpnet-tor.clab.yml`` under a unique lab name (so it never
touches a lab someone else runs) is built with ``bgpnet lab``'s own code, without
agents. The agents of all nodes but the last are started and left to converge.
Then, per repetition, the last node's agent starts and the time until each other
node has the last node's pod CIDR as a ``proto 201`` kernel route is recorded; the
agent is stopped and its route must disappear before the next repetition. The lab
is removed at the end, also on failure.

NOTE: only the three-node topology is measured; the largest node count that fits
the machine is not.
"""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bgpnet.config import DEFAULT_ROUTE_PROTOCOL, load_file as load_agent_config
from bgpnet.lab import build, procs
from bgpnet.lab.plan import Role, make_plan
from bgpnet.lab.topology import load_file

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = REPO / "containerlab" / "bgpnet-tor.clab.yml"
TIMEOUT = 120.0
POLL_SECONDS = 0.02


def _copy_topology(directory: Path) -> Path:
    doc = yaml.safe_load(TOPOLOGY.read_text())
    doc["name"] = f"bconv{secrets.token_hex(2)}"
    for node in doc["topology"]["nodes"].values():
        binds = []
        for bind in node.get("binds", []):
            source, _, rest = bind.partition(":")
            binds.append(f"{(TOPOLOGY.parent / source).resolve()}:{rest}")
        if binds:
            node["binds"] = binds
    path = directory / "bench.clab.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _has_route(namespace: str, prefix: str) -> bool:
    out = subprocess.run(["ip", "-n", namespace, "route", "show", prefix, "proto",
                          str(DEFAULT_ROUTE_PROTOCOL)], capture_output=True, text=True).stdout
    return bool(out.strip())


def _wait(condition, what: str) -> float:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {TIMEOUT:.0f} s")
        time.sleep(POLL_SECONDS)
    return time.monotonic()


def measure(repeats: int = 3) -> dict:
    """Return the seconds from the last node's agent start until the others route to it.

    Each repetition builds a fresh lab, because a peer that keeps a restarting node's
    routes as stale (BGP graceful restart) would delay the next start's withdraw.
    """
    seconds = []
    for _ in range(repeats):
        nodes, elapsed = _measure_once()
        seconds.append(elapsed)
        log.info("convergence nodes=%d seconds=%.3f", nodes, elapsed)
    return {"nodes": nodes, "seconds": seconds,
            "measured": "agent start of the last node until every other node has its "
                        "pod CIDR as a kernel route"}


def _measure_once() -> tuple[int, float]:
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="bgpnet-conv-") as temp:
        plan = make_plan(load_file(_copy_topology(Path(temp))))
        agents = plan.with_role(Role.AGENT)
        *others, new = agents
        new_cidr = str(load_agent_config(new.agent_config).pod_cidr)
        started: list[subprocess.Popen] = []
        build.up(plan, bin_dir=bin_dir, start_agents=False)
        try:
            for node in others:
                _, process = procs.start_agent(node, bin_dir)
                started.append(process)
            for node in others:
                for peer in others:
                    cidr = str(load_agent_config(peer.agent_config).pod_cidr)
                    if peer is not node:
                        _wait(lambda: _has_route(node.namespace, cidr), f"{node.name} route to {cidr}")
            begin = time.monotonic()
            _, process = procs.start_agent(new, bin_dir)
            started.append(process)
            end = max(_wait(lambda n=node: _has_route(n.namespace, new_cidr),
                            f"{node.name} route to {new_cidr}") for node in others)
        finally:
            for process in started:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            build.down(plan)
    return len(agents), end - begin

"""Cluster convergence in labs of N bgpnet nodes on one FRR route reflector.

For each N in ``--nodes`` the benchmark generates, in a temporary directory, a
topology shaped like ``containerlab/bgpnet-tor.clab.yml``. It has one L2 segment (the
bridge ``fabric``) and N nodes without pods. On the segment, ``tor`` runs FRR as the
iBGP route reflector of AS 64512 with the lab's timers (keepalive 3 s, hold 9 s). Node i has the
address ``192.168.A.B/16`` and the pod CIDR ``10.C.D.0/24`` (see ``node_address`` and
``pod_cidr``), all inside the lab's own namespaces. The lab name is ``bbench`` plus
random hex, so it never touches another lab. ``bgpnet lab``'s own code builds the
namespaces and FRR.

Steps and records per N:

1. build the namespaces, links and FRR (``network_seconds``);
2. start the agents of nodes 1..N-1 together and wait until each of them has a
   kernel route to every other one's pod CIDR (``agents_seconds``; the sum is
   ``build_seconds``, the whole-lab build);
3. memory: RSS and PSS of each node's agent + ExaBGP + relay, and the drop of
   ``MemAvailable`` since before the build, which also counts the kernel's share;
4. idle CPU of the whole lab over ``IDLE_SECONDS``, and the machine's CPU use;
5. start node N's agent and time until every other node has node N's pod CIDR as a
   kernel route (``convergence_seconds``), and until node N has all the others;
6. the route reflector's sessions: how many are Established and how many were
   dropped since the start, which shows keepalives missed under CPU load;
7. tear the lab down.

Routes are read from ``/proc/<agent pid>/net/route``, the kernel's IPv4 main table as
seen from that node's namespace, so polling costs a file read and no process.

Before each N the memory it needs is estimated from the largest N measured so far,
and the run stops when less than ``--min-free-mb`` would remain. During a build the
run aborts, and tears down, as soon as ``MemAvailable`` falls below that floor.

Usage (root): ``.venv/bin/python -m bench.scale --nodes 3,10,25,50``
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import resources
from bench.daemons import VENV_BIN, _descendants
from bgpnet import nodestate
from bgpnet.errors import LabError
from bgpnet.lab import build, procs
from bgpnet.lab.plan import NodePlan, Role, make_plan
from bgpnet.lab.topology import load_file

log = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
ASN = 64512
TOR_ADDRESS = "192.168.0.1"
MAX_NODES = 250 * 255  # node_address gives 250 addresses per /24 inside 192.168.0.0/16
READY_TIMEOUT = 900.0  # seconds for every agent to write node.json and converge
CONVERGENCE_TIMEOUT = 300.0
POLL_SECONDS = 0.05
IDLE_SECONDS = 30.0
MIN_FREE_MB = 4096


def node_name(index: int) -> str:
    return f"node{index:03d}"


def node_address(index: int) -> str:
    """Return node ``index`` (1-based)'s address: 192.168.1.1 .. 192.168.1.250, 192.168.2.1 ..."""
    return f"192.168.{1 + (index - 1) // 250}.{1 + (index - 1) % 250}"


def pod_cidr(index: int) -> str:
    """Return node ``index``'s pod CIDR: 10.100.0.0/24, 10.100.1.0/24, ... inside 10.0.0.0/8."""
    return f"10.{100 + (index - 1) // 256}.{(index - 1) % 256}.0/24"


def frr_config(count: int) -> str:
    neighbors = "\n".join(f" neighbor {node_address(i)} peer-group nodes" for i in range(1, count + 1))
    return f"""frr defaults traditional
hostname tor
router bgp {ASN}
 bgp router-id {TOR_ADDRESS}
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor nodes peer-group
 neighbor nodes remote-as {ASN}
 neighbor nodes timers 3 9
 neighbor nodes timers connect 2
{neighbors}
 address-family ipv4 unicast
  neighbor nodes activate
  neighbor nodes route-reflector-client
 exit-address-family
"""


def agent_config(index: int) -> dict:
    """Return node ``index``'s agent config, as the lab's node configs are written."""
    return {
        "node": {"name": node_name(index), "address": node_address(index), "asn": ASN},
        "pod_cidr": pod_cidr(index),
        "cluster_cidr": "10.0.0.0/8",
        "bridge": {"name": "v-net-0"},
        "peers": [{"name": "tor", "address": TOR_ADDRESS, "asn": ASN}],
    }


def write_topology(directory: Path, count: int) -> Path:
    """Write the topology, FRR config and agent configs of an N-node lab; return the topology."""
    (directory / "frr.conf").write_text(frr_config(count))
    nodes: dict = {
        "fabric": {"kind": "bridge"},
        "tor": {"kind": "linux", "binds": [f"{directory / 'frr.conf'}:/etc/frr/frr.conf"],
                "exec": [f"ip addr add {TOR_ADDRESS}/16 dev eth1"]},
    }
    links = [{"endpoints": ["tor:eth1", "fabric:tor-eth1"]}]
    for index in range(1, count + 1):
        name = node_name(index)
        config = directory / f"{name}.yaml"
        config.write_text(yaml.safe_dump(agent_config(index)))
        nodes[name] = {"kind": "linux", "binds": [f"{config}:/etc/bgpnet/agent.yaml:ro"],
                       "labels": {"bgpnet.pods": "0"},
                       "exec": [f"ip addr add {node_address(index)}/16 dev eth1"]}
        links.append({"endpoints": [f"{name}:eth1", f"fabric:{name}-eth1"]})
    doc = {"name": f"bbench{secrets.token_hex(3)}", "topology": {"nodes": nodes, "links": links}}
    path = directory / "scale.clab.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def route_key(cidr: str) -> tuple[str, str]:
    """Return the destination and mask of ``cidr`` as ``/proc/net/route`` prints them."""
    network = ipaddress.IPv4Network(cidr)

    def hex32(address: ipaddress.IPv4Address) -> str:
        # /proc/net/route prints the address in host byte order (little-endian here).
        return f"{struct.unpack('=I', socket.inet_aton(str(address)))[0]:08X}"

    return hex32(network.network_address), hex32(network.netmask)


def kernel_routes(pid: int) -> set[tuple[str, str]]:
    """Return (destination, mask) of every IPv4 main-table route in ``pid``'s namespace."""
    lines = Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:]
    return {(fields[1], fields[7]) for fields in (line.split() for line in lines)}


def available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("MemAvailable missing from /proc/meminfo")


def machine_busy() -> tuple[int, int]:
    """Return (busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class MemoryLow(RuntimeError):
    """MemAvailable fell below the floor during a build."""


class Scale:
    """One N-node lab: build, measure, tear down."""

    def __init__(self, count: int, min_free_mb: int) -> None:
        self.count = count
        self.min_free_mb = min_free_mb
        self.agents: dict[str, subprocess.Popen] = {}

    def run(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="bgpnet-scale-") as temp:
            plan = make_plan(load_file(write_topology(Path(temp), self.count)))
            try:
                return self._measure(plan)
            finally:
                self._stop_agents()
                started = time.monotonic()
                build.down(plan)
                log.info("scale lab down nodes=%d seconds=%.1f", self.count,
                         time.monotonic() - started)

    def _measure(self, plan) -> dict:
        tor = plan.with_role(Role.FRR)[0]
        *others, new = plan.with_role(Role.AGENT)
        free_before = available_mb()
        begin = time.monotonic()
        build.up(plan, bin_dir=VENV_BIN, start_agents=False)
        network_seconds = time.monotonic() - begin

        started = time.monotonic()
        for node in others:
            self._start(node)
        self._wait_ready(others)
        ready_seconds = time.monotonic() - started
        self._wait_mesh(others)
        agents_seconds = time.monotonic() - started
        log.info("scale lab built nodes=%d network=%.1fs agents_ready=%.1fs converged=%.1fs",
                 len(others), network_seconds, ready_seconds, agents_seconds)

        memory = self._memory(others, free_before)
        idle = self._idle_cpu(others, tor)

        new_key = route_key(pod_cidr(self.count))
        begin = time.monotonic()
        self._start(new)
        waiting = {node.name: self.agents[node.name].pid for node in others}
        last_seen = begin
        deadline = begin + CONVERGENCE_TIMEOUT
        while waiting:
            self._check_memory()
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes={self.count}: {len(waiting)} nodes lack the route to "
                                   f"{pod_cidr(self.count)} after {CONVERGENCE_TIMEOUT:.0f} s")
            now = time.monotonic()
            for name, pid in list(waiting.items()):
                if new_key in kernel_routes(pid):
                    del waiting[name]
                    last_seen = now
            time.sleep(POLL_SECONDS)
        convergence = last_seen - begin
        expected = {route_key(pod_cidr(i)) for i in range(1, self.count)}
        while not expected <= kernel_routes(self.agents[new.name].pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes={self.count}: {new.name} lacks routes to the others")
            time.sleep(POLL_SECONDS)
        reverse = time.monotonic() - begin
        log.info("scale convergence nodes=%d seconds=%.3f reverse=%.3f",
                 self.count, convergence, reverse)

        return {
            "nodes": self.count,
            "network_seconds": round(network_seconds, 2),
            "agents_ready_seconds": round(ready_seconds, 2),
            "agents_seconds": round(agents_seconds, 2),
            "build_seconds": round(network_seconds + agents_seconds, 2),
            "convergence_seconds": round(convergence, 3),
            "new_node_has_all_seconds": round(reverse, 3),
            "memory": memory,
            "idle": idle,
            "sessions": self._sessions(tor),
        }

    def _start(self, node: NodePlan) -> None:
        _, process = procs.start_agent(node, VENV_BIN)
        self.agents[node.name] = process

    def _check_memory(self) -> None:
        free = available_mb()
        if free < self.min_free_mb:
            raise MemoryLow(f"nodes={self.count}: MemAvailable {free} MB is below the "
                            f"{self.min_free_mb} MB floor; stopping this lab")

    def _wait_ready(self, nodes: list[NodePlan]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for node in nodes:
            path = node.runtime_dir / nodestate.FILE_NAME
            while not path.exists():
                self._check_memory()
                status = self.agents[node.name].poll()
                if status is not None:
                    raise RuntimeError(f"agent of {node.name} exited with status {status}; "
                                       f"log: {procs.tail(node.runtime_dir / procs.AGENT_LOG)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"agent of {node.name} not ready in {READY_TIMEOUT:.0f} s")
                time.sleep(0.2)

    def _wait_mesh(self, nodes: list[NodePlan]) -> None:
        keys = {node.name: route_key(pod_cidr(int(node.name[4:]))) for node in nodes}
        waiting = {node.name for node in nodes}
        deadline = time.monotonic() + READY_TIMEOUT
        while waiting:
            self._check_memory()
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes={self.count}: {len(waiting)} nodes lack routes to "
                                   f"the others after {READY_TIMEOUT:.0f} s")
            for name in list(waiting):
                expected = {key for other, key in keys.items() if other != name}
                if expected <= kernel_routes(self.agents[name].pid):
                    waiting.discard(name)
            time.sleep(0.2)

    def _memory(self, nodes: list[NodePlan], free_before: int) -> dict:
        per_node_rss, per_node_pss = [], []
        for node in nodes:
            pid = self.agents[node.name].pid
            pids = [pid, *_descendants(pid)]
            per_node_rss.append(sum(rss_mb(p) for p in pids))
            per_node_pss.append(sum(pss_mb(p) for p in pids))
        drop = free_before - available_mb()
        return {
            "nodes_running": len(nodes),
            "rss_mb_per_node": round(sum(per_node_rss) / len(nodes), 1),
            "pss_mb_per_node": round(sum(per_node_pss) / len(nodes), 1),
            "rss_mb_total": round(sum(per_node_rss)),
            "pss_mb_total": round(sum(per_node_pss)),
            "available_drop_mb": drop,
            "available_drop_mb_per_node": round(drop / len(nodes), 1),
            "available_mb_after": available_mb(),
        }

    def _idle_cpu(self, nodes: list[NodePlan], tor: NodePlan) -> dict:
        pids = [pid for node in nodes for pid in
                (self.agents[node.name].pid, *_descendants(self.agents[node.name].pid))]
        frr = [int((tor.runtime_dir / f"{daemon}.pid").read_text()) for daemon in ("zebra", "bgpd")]
        before = {pid: _cpu(pid) for pid in pids + frr}
        busy_before, total_before = machine_busy()
        time.sleep(IDLE_SECONDS)
        busy_after, total_after = machine_busy()
        used = {pid: _cpu(pid) - seconds for pid, seconds in before.items()}
        nodes_cpu = sum(used[pid] for pid in pids)
        return {
            "seconds": IDLE_SECONDS,
            "nodes_cpu_seconds": round(nodes_cpu, 2),
            "nodes_cpu_cores": round(nodes_cpu / IDLE_SECONDS, 3),
            "frr_cpu_seconds": round(sum(used[pid] for pid in frr), 2),
            "machine_busy_percent": round(100 * (busy_after - busy_before)
                                          / max(1, total_after - total_before), 1),
            "load_average_1m": os.getloadavg()[0],
        }

    def _sessions(self, tor: NodePlan) -> dict:
        done = subprocess.run(["vtysh", "--vty_socket", str(tor.runtime_dir), "-c",
                               "show bgp ipv4 unicast summary json"],
                              capture_output=True, text=True)
        try:
            peers = json.loads(done.stdout).get("peers", {})
        except ValueError:
            return {"error": done.stderr.strip()[:200]}
        return {
            "established": sum(1 for peer in peers.values() if peer.get("state") == "Established"),
            "configured": len(peers),
            "connections_dropped": sum(peer.get("connectionsDropped", 0) for peer in peers.values()),
        }

    def _stop_agents(self) -> None:
        targets = [(process.pid, f"agent={name}") for name, process in self.agents.items()
                   if process.poll() is None]
        for message in procs.stop_all(targets):
            log.warning("scale teardown: %s", message)
        for process in self.agents.values():
            process.poll()


def _cpu(pid: int) -> float:
    try:
        return resources.cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="3,10,25,50",
                        help="comma-separated node counts, run in this order (default 3,10,25,50)")
    parser.add_argument("--min-free-mb", type=int, default=MIN_FREE_MB,
                        help=f"MemAvailable in MB that must remain (default {MIN_FREE_MB})")
    parser.add_argument("--exabgp-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ExaBGP environment setting for every agent, such as "
                             "exabgp.reactor.speed=10.0 (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"where to write the JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for setting in args.exabgp_env:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("exabgp."):
            parser.error(f"--exabgp-env {setting!r}: expected exabgp.SECTION.KEY=VALUE")
        # The lab starts each agent with this process's environment, and the agent
        # passes exabgp.* variables that it does not render itself on to ExaBGP.
        os.environ[key] = value
    # SIGTERM unwinds like Ctrl-C, so the lab of the current step is torn down.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if os.geteuid() != 0:
        print("bench.scale: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    counts = [int(text) for text in args.nodes.split(",")]
    if any(not 2 <= count <= MAX_NODES for count in counts):
        parser.error(f"--nodes {args.nodes!r}: each count must be from 2 to {MAX_NODES}")

    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "cores": os.cpu_count(), "available_mb_at_start": available_mb(),
                    "min_free_mb": args.min_free_mb, "exabgp_env": args.exabgp_env, "runs": []}
    per_node_mb = 0.0
    for count in counts:
        needed = count * per_node_mb
        if per_node_mb and available_mb() - needed < args.min_free_mb:
            result["stopped"] = (f"nodes={count} would need about {needed:.0f} MB "
                                 f"({per_node_mb:.0f} MB per node), leaving less than "
                                 f"{args.min_free_mb} MB available")
            log.warning("scale stop: %s", result["stopped"])
            break
        log.info("scale start nodes=%d available_mb=%d", count, available_mb())
        try:
            record = Scale(count, args.min_free_mb).run()
        except (MemoryLow, TimeoutError, RuntimeError, LabError) as exc:
            result["runs"].append({"nodes": count, "failed": str(exc)})
            result["stopped"] = f"nodes={count} failed: {exc}"
            log.warning("scale stop: %s", result["stopped"])
            break
        result["runs"].append(record)
        per_node_mb = max(per_node_mb, record["memory"]["available_drop_mb_per_node"])
        print(json.dumps(record))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

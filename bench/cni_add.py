"""Time CNI ADD and DEL for bgpnet-cni and for the reference bridge + host-local plugins.

Variants, each run as a runtime runs a plugin (environment and stdin, a fresh process
per call, started in the node's network namespace):
  C client, agent    build/bgpnet-cni (``make cni``) hands the request to the agent's
                     control socket (``python -m bgpnet.api.control``: the agent's node
                     setup and control socket, without BGP)
  C client, direct   build/bgpnet-cni where no agent listens: it execs the Python plugin,
                     which does the work itself
  Python, agent      the Python entry point .venv/bin/bgpnet-cni, agent answering
  Python, direct     the Python entry point, no agent
  reference          /usr/lib/cni/bridge with host-local IPAM (Debian package
                     containernetworking-plugins), bridge with isGateway,
                     isDefaultGateway and hairpinMode, the closest match to bgpnet

The agent variants share one node namespace, the direct variants another; every
variant has its own pod namespace. One iteration runs ADD then
DEL of every variant in turn, so slow phases of the machine hit all variants alike.
The time is the wall time of one plugin process, measured around ``subprocess.run``
by this script, whose calling thread has entered the node's namespace.

Usage: python bench/cni_add.py [--iterations N]
Needs root. Every namespace and process it creates is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(sys.executable).parent / "bgpnet-cni"
C_CLIENT = REPO / "build" / "bgpnet-cni"
REFERENCE_DIR = Path("/usr/lib/cni")
CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
READY_TIMEOUT = 30.0  # seconds for the control socket to answer
CONFLIST = REPO / "deploy" / "cni" / "10-bgpnet.conflist"

_libc = ctypes.CDLL(None, use_errno=True)


def run(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with status {done.returncode}: "
                           f"{done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Move the calling thread into ``namespace``; children started inside inherit it."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
        yield
    finally:
        if _libc.setns(original, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the original namespace failed")
        os.close(original)
        os.close(target)


def plugin_entry(extra: dict) -> str:
    """Return the plugin entry of the shipped conflist with the list's name and version."""
    conflist = json.loads(CONFLIST.read_text())
    entry = {**conflist["plugins"][0], "name": conflist["name"],
             "cniVersion": conflist["cniVersion"], **extra}
    return json.dumps(entry)


class Variant:
    """One plugin under test: its node and pod namespaces, executable and config."""

    def __init__(self, label: str, node: str, pod: str, executable: Path, config: str) -> None:
        self.label = label
        self.node = node
        self.pod = pod
        self.executable = executable
        self.config = config
        self.times: dict[str, list[float]] = {"ADD": [], "DEL": []}

    def call(self, command: str, container_id: str) -> float:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
               "CNI_NETNS": f"/run/netns/{self.pod}", "CNI_IFNAME": "eth0",
               "CNI_PATH": str(REFERENCE_DIR), "PATH": os.environ.get("PATH", "")}
        with entered(self.node):
            started = time.perf_counter()
            done = subprocess.run([str(self.executable)], input=self.config, env=env,
                                  capture_output=True, text=True)
            elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{self.label} {command} failed with status {done.returncode}: "
                               f"{done.stdout.strip()} {done.stderr.strip()}")
        self.times[command].append(elapsed)
        return elapsed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    """The namespaces, state directories and control-socket process of one run."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="bgpnet-cni-bench."))

    def namespace(self, role: str) -> str:
        name = f"bgpb-{self.tag}-{role}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def node_config(self, role: str, subnet_octet: int) -> Path:
        path = self.tmp / f"{role}.yaml"
        path.write_text(
            f"node: {{name: {role}, address: 192.0.2.{subnet_octet}, asn: 64512}}\n"
            f"pod_cidr: 10.{subnet_octet}.0.0/24\n"
            f"cluster_cidr: 10.{subnet_octet}.0.0/16\n"
            "bridge: {name: v-net-0}\n"
            "peers: []\n")
        return path

    def start_control(self, node: str, config: Path, state_dir: Path) -> None:
        process = subprocess.Popen(
            ["ip", "netns", "exec", node, sys.executable, "-m", "bgpnet.api.control",
             "--config", str(config), "--state-dir", str(state_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        self.processes.append(process)
        probe = ("from bgpnet.cni import agent_client; "
                 "import sys; sys.exit(agent_client.call({'op': 'node-state'}) is None)")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"control socket process exited with {process.returncode}")
            done = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", probe],
                                  capture_output=True, cwd=REPO)
            if done.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"control socket in {node} did not answer in {READY_TIMEOUT} s")

    def set_up_node_only(self, node: str, config: Path, state_dir: Path) -> None:
        """Set up the bridge and node.json as the agent does, then stop: nothing listens."""
        self.start_control(node, config, state_dir)
        self.stop_processes()

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def close(self) -> None:
        self.stop_processes()
        for name in reversed(self.namespaces):
            run("ip", "netns", "delete", name, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def build_variants(bench: Bench) -> list[Variant]:
    agent_node = bench.namespace("agent")
    direct_node = bench.namespace("direct")
    reference_node = bench.namespace("ref")
    agent_state = bench.tmp / "agent-state"
    direct_state = bench.tmp / "direct-state"
    # The direct node first: setting it up stops every process started so far.
    bench.set_up_node_only(direct_node, bench.node_config("direct", 62), direct_state)
    bench.start_control(agent_node, bench.node_config("agent", 61), agent_state)

    reference_config = json.dumps({
        "cniVersion": "1.0.0", "name": "reference", "type": "bridge", "bridge": "v-net-0",
        "isGateway": True, "isDefaultGateway": True, "hairpinMode": True,
        "ipam": {"type": "host-local", "subnet": "10.63.0.0/24",
                 "dataDir": str(bench.tmp / "host-local")},
    })
    agent_config = plugin_entry({})
    direct_config = plugin_entry({"stateDir": str(direct_state)})
    return [
        Variant("C client, agent", agent_node, bench.namespace("c-agent-pod"), C_CLIENT,
                agent_config),
        Variant("C client, direct", direct_node, bench.namespace("c-direct-pod"), C_CLIENT,
                direct_config),
        Variant("Python, agent", agent_node, bench.namespace("py-agent-pod"), PLUGIN,
                agent_config),
        Variant("Python, direct", direct_node, bench.namespace("py-direct-pod"), PLUGIN,
                direct_config),
        Variant("reference", reference_node, bench.namespace("ref-pod"),
                REFERENCE_DIR / "bridge", reference_config),
    ]


def report(variants: list[Variant], iterations: int) -> None:
    print(f"CNI ADD and DEL wall time per plugin process, {iterations} iterations, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'variant':<20} {'ADD p50':>9} {'ADD p99':>9} {'DEL p50':>9} {'DEL p99':>9}  (ms)")
    for variant in variants:
        add, delete = variant.times["ADD"], variant.times["DEL"]
        print(f"{variant.label:<20} {1000 * statistics.median(add):9.1f} "
              f"{1000 * percentile(add, 0.99):9.1f} {1000 * statistics.median(delete):9.1f} "
              f"{1000 * percentile(delete, 0.99):9.1f}")
    reference = variants[-1]
    print(f"{'ratio to reference':<20} {'ADD p50':>9} {'ADD p99':>9} {'DEL p50':>9} {'DEL p99':>9}")
    for variant in variants[:-1]:
        ratios = []
        for command in ("ADD", "DEL"):
            ours, theirs = variant.times[command], reference.times[command]
            ratios.append(statistics.median(ours) / statistics.median(theirs))
            ratios.append(percentile(ours, 0.99) / percentile(theirs, 0.99))
        print(f"{variant.label:<20} " + " ".join(f"{ratio:9.2f}" for ratio in ratios))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50,
                        help="ADD+DEL pairs per variant (default 50)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("cni_add.py needs root (network namespaces)", file=sys.stderr)
        return 2
    # The C client's fallback is the Python entry point of this venv.
    run("make", "-s", "-C", str(REPO), "cni", f"CNI_PYTHON={PLUGIN}")
    bench = Bench()
    try:
        variants = build_variants(bench)
        for variant in variants:  # one untimed warm-up pair each (page cache, pyc files)
            variant.call("ADD", "warmup")
            variant.call("DEL", "warmup")
            variant.times = {"ADD": [], "DEL": []}
        for iteration in range(args.iterations):
            for variant in variants:
                container_id = f"bench{iteration}"
                variant.call("ADD", container_id)
                variant.call("DEL", container_id)
        report(variants, args.iterations)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``lab check`` and ``lab status``: observe a running lab from outside its processes.

Role: side effects only (read routes and addresses with ``ip -j``, run ``ping`` in pod
namespaces); decisions and text come from ``bgpnet.lab.report``. Every observation is
made with iproute2 and ping, never by asking the agents, so a check can disagree with
what an agent believes.

Convergence means: each bgpnet node's kernel has a route of the node's configured
route protocol to every other bgpnet node's pod CIDR. The check polls for it until the
timeout, then prints the tables and the matrix whether or not it converged.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bgpnet import config
from bgpnet.errors import LabError
from bgpnet.lab import manifest as manifest_file
from bgpnet.lab import netns, procs, report
from bgpnet.lab.plan import LabPlan
from bgpnet.lab.topology import Role
from bgpnet.model import Prefix

POLL_INTERVAL = 0.5  # seconds between route reads while waiting for convergence
PING_TIMEOUT = 1  # seconds, ping -W


@dataclass(frozen=True)
class CheckResult:
    ok: bool  # converged and every pod pair reachable
    converged: bool
    reachable: int
    pairs: int
    text: str


def load_agent_configs(plan: LabPlan) -> dict[str, config.AgentConfig]:
    return {node.name: config.load_file(node.agent_config) for node in plan.with_role(Role.AGENT)
            if node.agent_config is not None}


def wait_converged(plan: LabPlan, configs: dict[str, config.AgentConfig],
                   timeout: float) -> dict[str, tuple[Prefix, ...]]:
    """Poll routes until nothing is missing or ``timeout`` passes; return what is missing."""
    expected = report.expected_routes({name: cfg.pod_cidr for name, cfg in configs.items()})
    deadline = time.monotonic() + timeout
    while True:
        learned = {name: report.route_prefixes(
                       netns.routes(plan.node(name).namespace, cfg.route_protocol))
                   for name, cfg in configs.items()}
        missing = report.missing_routes(expected, learned)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(POLL_INTERVAL)


def pod_addresses(plan: LabPlan) -> list[report.PodAddress]:
    result = []
    for pod in plan.pods:
        addresses = netns.ipv4_addresses(pod.namespace, "eth0") if _exists(pod.namespace) else []
        result.append(report.PodAddress(label=pod.label, address=addresses[0] if addresses else None))
    return result


def ping_all(plan: LabPlan, pods: list[report.PodAddress]) -> dict[tuple[str, str], bool]:
    """Ping every ordered pod pair once, all pings running at the same time."""
    namespaces = {pod.label: pod.namespace for pod in plan.pods}
    running = []
    for source, target in report.ping_pairs(pods):
        if source.address is None or target.address is None:
            continue
        argv = ["ip", "netns", "exec", namespaces[source.label], "ping", "-c1",
                f"-W{PING_TIMEOUT}", "-q", target.address]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        running.append(((source.label, target.label), process))
    # ping -W1 -c1 ends within about a second; the wait bound only guards against a hang.
    results = {}
    for pair, process in running:
        try:
            results[pair] = process.wait(timeout=PING_TIMEOUT + 10) == 0
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            results[pair] = False
    return results


def run(plan: LabPlan, timeout: float = 60.0) -> CheckResult:
    """Wait for convergence, then build the report text of routes and reachability."""
    missing_namespaces = [name for name in plan.node_namespaces if not _exists(name)]
    if missing_namespaces:
        raise LabError(f"check lab {plan.lab} failed: namespaces {', '.join(missing_namespaces)} "
                       f"do not exist; run bgpnet lab up {plan.topology_path}")
    configs = load_agent_configs(plan)
    started = time.monotonic()
    missing = wait_converged(plan, configs, timeout)
    waited = time.monotonic() - started

    lines = []
    if missing:
        lines.append(f"converged: no, after {waited:.1f} s ({report.describe_missing(missing)})")
        for name in configs:
            node = plan.node(name)
            if not _agent_running(node.runtime_dir):
                lines.append(f"  the agent of {name} is not running; its log is "
                             f"{node.runtime_dir / 'agent.log'}")
    else:
        lines.append(f"converged: yes, after {waited:.1f} s")
    pod_cidrs = [cfg.pod_cidr for cfg in configs.values()]
    tables = {name: report.pod_route_rows(netns.routes(plan.node(name).namespace), pod_cidrs)
              for name in configs}
    text = "\n".join(lines) + "\n" + report.render_routes(tables)

    pods = pod_addresses(plan)
    reached = ping_all(plan, pods)
    text += report.render_matrix(pods, reached)
    pairs = len(report.ping_pairs(pods))
    ok_count = sum(1 for value in reached.values() if value)
    return CheckResult(ok=not missing and ok_count == pairs, converged=not missing,
                       reachable=ok_count, pairs=pairs, text=text)


def status(plan: LabPlan) -> str:
    """Describe which namespaces exist, which recorded processes run, and pod addresses."""
    existing = netns.list_namespaces()
    record = manifest_file.load(plan.manifest_path)
    lines = [f"lab {plan.lab} ({plan.topology_path})"]
    for node in plan.nodes:
        lines.append(f"  {node.namespace:<28} {node.role.value:<6} "
                     f"{'present' if node.namespace in existing else 'absent'}")
    if record is not None:
        for item in record.processes:
            state = "running" if procs.is_alive(item) else "stopped"
            lines.append(f"  process {item.node}/{item.name} pid={item.pid} {state}")
    for pod in pod_addresses(plan):
        lines.append(f"  pod {pod.label} {pod.address or 'no address'}")
    if record is None:
        lines.append("  no manifest: the lab is not up")
    return "\n".join(lines) + "\n"


def _agent_running(state_dir: Path) -> bool:
    """Return True when the agent's pid file names a live process.

    The agent writes ``agent.pid`` in its state directory and removes it when it exits.
    """
    try:
        pid = int((state_dir / "agent.pid").read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True


def _exists(namespace: str) -> bool:
    return namespace in netns.list_namespaces()


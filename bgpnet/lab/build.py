"""Build and tear down a lab from its plan: ``up`` and ``down``.

Role: the composition of the side-effect modules (``netns``, ``procs``, ``manifest``)
in the order a lab needs them:

1. node namespaces (loopback up), bridges inside bridge namespaces, veth pairs;
2. each node's exec lines, run in its namespace;
3. FRR (zebra, then bgpd) on FRR nodes;
4. the agent on bgpnet nodes, then a wait until each has written ``node.json``;
5. pod namespaces, attached concurrently by running ``bgpnet-cni`` (CNI ADD) in the
   node's namespace as a runtime does: ``CNI_*`` variables, and on stdin the plugin
   entry of ``deploy/cni/10-bgpnet.conflist`` with the list's name and cniVersion.

Rules: ``up`` first runs ``down``, so a running lab is replaced. Every object is in the
manifest before the step that could leave it behind. When a step fails, ``up`` tears
down everything recorded and raises ``LabError`` naming the step.

``down`` first stops the recorded processes. It then stops every process still
running in a lab namespace: the agents' ExaBGP children, a bgpd restarted by hand, and
also a shell that a user opened there, because the namespace is about to go. Last it
deletes the namespaces, which removes their links, and the runtime directory. It
continues past failures and reports them all at the end, and a second run finds nothing to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bgpnet.errors import LabError
from bgpnet.lab import manifest as manifest_file
from bgpnet.lab import netns, procs
from bgpnet.lab.manifest import Manifest, PodRecord
from bgpnet.lab.plan import LabPlan, NodePlan, PodPlan
from bgpnet.lab.topology import Role

log = logging.getLogger(__name__)

ATTACH_TIMEOUT = 30.0  # seconds for one pod attachment
ATTACH_RETRY_SECONDS = 0.2
TRY_AGAIN_LATER = 11  # CNI error code
CONFLIST = Path(__file__).resolve().parents[2] / "deploy" / "cni" / "10-bgpnet.conflist"


@contextlib.contextmanager
def _lab_lock(plan: LabPlan):
    """Hold an exclusive lock on the runtime root, so two up or down runs never interleave."""
    # One lock for all labs, taken on the root directory itself, leaves no lock file
    # behind. A build takes seconds, so serialising different labs costs little.
    root = plan.runtime_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def up(plan: LabPlan, bin_dir: Path | None = None, start_agents: bool = True) -> Manifest:
    """Build the lab; on failure remove what was built and raise LabError naming the step."""
    with _lab_lock(plan):
        return _up(plan, bin_dir or Path(sys.executable).parent, start_agents)


def down(plan: LabPlan) -> None:
    """Remove every namespace and process of the lab; safe to run twice."""
    with _lab_lock(plan):
        _down(plan)


def _up(plan: LabPlan, bin_dir: Path, start_agents: bool) -> Manifest:
    _down(plan)
    started = time.monotonic()
    record = Manifest(path=plan.manifest_path, lab=plan.lab, topology=str(plan.topology_path))
    step = "create runtime directory"
    try:
        plan.runtime_dir.mkdir(parents=True, exist_ok=True)
        record.save()
        for node in plan.nodes:
            step = f"create namespace {node.namespace}"
            record.add_namespace(node.namespace)
            netns.add_namespace(node.namespace)
        for node in plan.with_role(Role.BRIDGE):
            step = f"create bridge {node.name}"
            netns.add_bridge(node.namespace, node.name)
        for veth in plan.veths:
            step = f"create link {veth.a_namespace}:{veth.a_interface}"
            netns.add_veth(veth)
        # NOTE: unlike containerlab, exec lines share the host's filesystem and run as
        # root; only the network namespace is the node's.
        for node in plan.nodes:
            for index, argv in enumerate(node.exec_lines):
                step = f"run exec[{index}] of node {node.name}"
                netns.exec_in(node.namespace, argv, step)
        for node in plan.with_role(Role.FRR):
            step = f"start FRR on node {node.name}"
            procs.prepare_frr_dir(node)
            record.add_process(procs.start_frr_daemon(node, "zebra"))
            record.add_process(procs.start_frr_daemon(node, "bgpd"))
        if start_agents:
            step = "start agents"
            _start_agents(plan, record, bin_dir)
            step = "attach pods"
            _attach_pods(plan, record, bin_dir)
    except (LabError, OSError, KeyboardInterrupt) as exc:
        log.error("lab up failed lab=%s step=%r error=%s; tearing down", plan.lab, step, exc)
        try:
            _down(plan)
        except LabError as cleanup:
            log.error("lab teardown after failure incomplete lab=%s error=%s", plan.lab, cleanup)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise LabError(f"lab {plan.lab} up failed at step '{step}': {exc}. "
                       "Everything this run created was removed.") from exc
    log.info("lab up lab=%s namespaces=%d processes=%d pods=%d seconds=%.2f", plan.lab,
             len(record.namespaces), len(record.processes), len(record.pods),
             time.monotonic() - started)
    return record


def _start_agents(plan: LabPlan, record: Manifest, bin_dir: Path) -> None:
    children: list[tuple[NodePlan, subprocess.Popen]] = []
    for node in plan.with_role(Role.AGENT):
        process_record, process = procs.start_agent(node, bin_dir)
        record.add_process(process_record)
        children.append((node, process))
    for node, process in children:
        procs.wait_agent_ready(node, process)


def _attach_pods(plan: LabPlan, record: Manifest, bin_dir: Path) -> None:
    for pod in plan.pods:
        record.add_namespace(pod.namespace)
        netns.add_namespace(pod.namespace)
    plugin = bin_dir / "bgpnet-cni"
    if not plugin.exists():
        raise LabError(f"attach pods: {plugin} not found; install bgpnet (make venv) "
                       "so the CNI plugin is next to the bgpnet command")
    config = plugin_config()
    with ThreadPoolExecutor(max_workers=max(1, len(plan.pods))) as pool:
        futures = [(pod, pool.submit(_attach_one, plan.node(pod.node), pod, plugin, config))
                   for pod in plan.pods]
        # Collect every result before raising, so no attachment is still running
        # while down() removes the namespaces.
        results = [(pod, _outcome(future)) for pod, future in futures]
    for pod, outcome in results:
        if isinstance(outcome, Exception):
            raise outcome
        record.add_pod(PodRecord(node=pod.node, name=pod.name, namespace=pod.namespace,
                                 address=outcome))


def _outcome(future) -> str | Exception:
    try:
        return future.result()
    except Exception as exc:  # re-raised by the caller once all attachments are done
        return exc


def plugin_config() -> str:
    """Return the plugin entry of the shipped conflist with the list's name and cniVersion."""
    conflist = json.loads(CONFLIST.read_text(encoding="utf-8"))
    entry = {**conflist["plugins"][0], "name": conflist["name"],
             "cniVersion": conflist["cniVersion"]}
    return json.dumps(entry)


def attach_command(node: NodePlan, plugin: Path) -> list[str]:
    return ["ip", "netns", "exec", node.namespace, str(plugin)]


def attach_environment(pod: PodPlan, plugin: Path) -> dict[str, str]:
    return {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": pod.namespace,
            "CNI_NETNS": f"/run/netns/{pod.namespace}", "CNI_IFNAME": "eth0",
            "CNI_PATH": str(plugin.parent), "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin")}


def _attach_one(node: NodePlan, pod: PodPlan, plugin: Path, config: str) -> str:
    step = f"attach pod {pod.label}"
    argv = attach_command(node, plugin)
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while True:
        try:
            done = subprocess.run(argv, input=config, env=attach_environment(pod, plugin),
                                  capture_output=True, text=True, timeout=ATTACH_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise LabError(f"{step}: bgpnet-cni ADD timed out after {ATTACH_TIMEOUT:g} s") from None
        try:
            output = json.loads(done.stdout)
        except ValueError:
            output = None
        # Code 11 is the spec's "try again later": the agent has written node.json but
        # its control socket is not listening yet. A runtime retries, and so do we.
        if isinstance(output, dict) and output.get("code") == TRY_AGAIN_LATER \
                and time.monotonic() < deadline:
            time.sleep(ATTACH_RETRY_SECONDS)
            continue
        break
    try:
        address = output["ips"][0]["address"] if done.returncode == 0 else None
    except (KeyError, IndexError, TypeError):
        address = None
    if address is None:
        detail = (done.stdout or done.stderr).strip()[:300]
        raise LabError(f"{step}: bgpnet-cni ADD failed with status {done.returncode}: "
                       f"{detail or 'no output'}")
    log.info("pod attached node=%s pod=%s namespace=%s address=%s",
             pod.node, pod.name, pod.namespace, address)
    return str(address)


def _down(plan: LabPlan) -> None:
    failures: list[str] = []
    record = manifest_file.load(plan.manifest_path)

    if record is not None:
        targets = [(item.pid, f"node={item.node} process={item.name}")
                   for item in record.processes if procs.is_alive(item)]
        failures += procs.stop_all(targets)

    existing = netns.list_namespaces()
    recorded = record.namespaces if record is not None else []
    namespaces = [name for name in dict.fromkeys([*recorded, *plan.namespaces]) if name in existing]
    leftovers = []
    for name in namespaces:
        for pid in netns.namespace_pids(name):
            leftovers.append((pid, f"namespace={name} process={procs.command_name(pid)}"))
    if leftovers:
        log.info("stopping processes left in lab namespaces lab=%s count=%d",
                 plan.lab, len(leftovers))
        failures += procs.stop_all(leftovers)

    # Pods before nodes: deleting a pod namespace removes its veth from the node too.
    for name in reversed(namespaces):
        try:
            netns.delete_namespace(name)
        except LabError as exc:
            failures.append(str(exc))
    if plan.runtime_dir.exists():
        shutil.rmtree(plan.runtime_dir, ignore_errors=True)
    if namespaces or record is not None:
        log.info("lab down lab=%s namespaces=%d", plan.lab, len(namespaces))
    if failures:
        raise LabError(f"lab {plan.lab} down incomplete: " + "; ".join(failures))

"""Namespaces, veth pairs and bridges of the lab, made and read with iproute2.

Role: every ``ip`` command the lab runs goes through ``run``, which raises ``LabError``
naming the step, the command and its error output. Nothing here touches the host
namespace: links are created with ``ip -n A link add ... peer name X netns B``, so both
veth ends are born inside lab namespaces, and the bridge of a segment lives in a
namespace of its own.

Deletes are idempotent on purpose: a namespace that is already gone is success,
because ``down`` must be safe to run twice and after a half-finished ``up``.

The lab shells out to ``ip`` rather than using netlink from Python. A build runs a
few dozen commands (the whole tor lab without agents builds in about 0.3 s on a
2-core machine), and a user can replay any failing step by hand from the error.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Sequence

from bgpnet.errors import LabError
from bgpnet.lab.plan import VethPlan

COMMAND_TIMEOUT = 30.0  # seconds; an ip command takes milliseconds


def run(argv: Sequence[str], step: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run ``argv`` and return its stdout; raise LabError naming ``step`` when it fails."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise LabError(f"{step}: program {argv[0]!r} not found; install it or fix PATH") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{step}: `{shlex.join(argv)}` timed out after {timeout:g} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().replace("\n", "; ")
        raise LabError(f"{step}: `{shlex.join(argv)}` failed with status "
                       f"{result.returncode}: {detail or 'no output'}")
    return result.stdout


def list_namespaces() -> set[str]:
    """Return the names of every named network namespace (``/run/netns``)."""
    output = run(["ip", "-j", "netns", "list"], "list namespaces").strip()
    if not output:
        return set()  # iproute2 6.1 prints nothing, not [], when there are none
    return {entry["name"] for entry in json.loads(output)}


def add_namespace(name: str) -> None:
    step = f"create namespace {name}"
    run(["ip", "netns", "add", name], step)
    run(["ip", "-n", name, "link", "set", "lo", "up"], step)


def delete_namespace(name: str) -> None:
    """Delete namespace ``name``; a missing one is success. Links inside it go with it."""
    if name not in list_namespaces():
        return
    run(["ip", "netns", "delete", name], f"delete namespace {name}")


def add_bridge(namespace: str, device: str) -> None:
    step = f"create bridge {device} in {namespace}"
    run(["ip", "-n", namespace, "link", "add", device, "type", "bridge"], step)
    run(["ip", "-n", namespace, "link", "set", device, "up"], step)


def add_veth(veth: VethPlan) -> None:
    """Create the pair inside its two namespaces, enslave the bridge side, set both ends up."""
    step = (f"create link {veth.a_namespace}:{veth.a_interface} - "
            f"{veth.b_namespace}:{veth.b_interface}")
    run(["ip", "-n", veth.a_namespace, "link", "add", veth.a_interface, "type", "veth",
         "peer", "name", veth.b_interface, "netns", veth.b_namespace], step)
    if veth.b_bridge is not None:
        run(["ip", "-n", veth.b_namespace, "link", "set", veth.b_interface,
             "master", veth.b_bridge], step)
    run(["ip", "-n", veth.b_namespace, "link", "set", veth.b_interface, "up"], step)
    run(["ip", "-n", veth.a_namespace, "link", "set", veth.a_interface, "up"], step)


def exec_in(namespace: str, argv: Sequence[str], step: str) -> str:
    return run(["ip", "netns", "exec", namespace, *argv], step)


def namespace_pids(name: str) -> list[int]:
    """Return the PIDs of processes whose network namespace is ``name``."""
    if name not in list_namespaces():
        return []
    output = run(["ip", "netns", "pids", name], f"list processes in {name}")
    return [int(word) for word in output.split()]


def routes(namespace: str, protocol: int | None = None) -> list[dict]:
    """Return ``ip -j route show`` of the main table, optionally only ``protocol``."""
    argv = ["ip", "-n", namespace, "-j", "-4", "route", "show"]
    if protocol is not None:
        argv += ["proto", str(protocol)]
    output = run(argv, f"read routes of {namespace}").strip()
    return json.loads(output) if output else []


def ipv4_addresses(namespace: str, device: str) -> list[str]:
    """Return the IPv4 addresses (without prefix length) on ``device`` in ``namespace``."""
    output = run(["ip", "-n", namespace, "-j", "-4", "addr", "show", "dev", device],
                 f"read addresses of {namespace}:{device}").strip()
    entries = json.loads(output) if output else []
    return [info["local"] for entry in entries for info in entry.get("addr_info", [])]

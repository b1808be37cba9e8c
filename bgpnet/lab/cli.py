"""``bgpnet lab up|down|check|status FILE``: the lab's command line.

Role: argument parsing and printing only. Handlers return an exit status and raise
``bgpnet.errors`` exceptions, which ``bgpnet.cli`` prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bgpnet.lab.plan import LabPlan, make_plan
from bgpnet.lab.topology import load_file


def register(subparsers) -> None:
    lab = subparsers.add_parser(
        "lab", help="build containerlab topologies in network namespaces, without Docker")
    commands = lab.add_subparsers(dest="lab_command", required=True)

    up = commands.add_parser("up", help="build the lab (replacing a running one) and start it")
    up.add_argument("file", type=Path, help="containerlab topology file (*.clab.yml)")
    up.add_argument("--no-agents", action="store_true",
                    help="build namespaces, links and FRR only: start no agents and attach no pods")
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop the lab's processes and remove its namespaces")
    down.add_argument("file", type=Path, help="containerlab topology file (*.clab.yml)")
    down.set_defaults(handler=_down)

    check = commands.add_parser(
        "check", help="wait for BGP to converge, then print routes and pod-to-pod reachability")
    check.add_argument("file", type=Path, help="containerlab topology file (*.clab.yml)")
    check.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for every node to have a route to every other "
                            "node's pod CIDR (default 60)")
    check.set_defaults(handler=_check)

    status = commands.add_parser("status", help="print the lab's namespaces, processes and pods")
    status.add_argument("file", type=Path, help="containerlab topology file (*.clab.yml)")
    status.set_defaults(handler=_status)


def _plan(args: argparse.Namespace) -> LabPlan:
    return make_plan(load_file(args.file))


def _up(args: argparse.Namespace) -> int:
    from bgpnet.lab import build

    plan = _plan(args)
    record = build.up(plan, start_agents=not args.no_agents)
    print(f"lab {plan.lab} is up: {len(record.namespaces)} namespaces, "
          f"{len(record.processes)} processes, {len(record.pods)} pods")
    for pod in record.pods:
        print(f"  {pod.namespace}  {pod.address}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from bgpnet.lab import build

    plan = _plan(args)
    build.down(plan)
    print(f"lab {plan.lab} is down")
    return 0


def _check(args: argparse.Namespace) -> int:
    from bgpnet.lab import check

    plan = _plan(args)
    result = check.run(plan, timeout=args.timeout)
    print(result.text, end="")
    return 0 if result.ok else 1


def _status(args: argparse.Namespace) -> int:
    from bgpnet.lab import check

    print(check.status(_plan(args)), end="")
    return 0

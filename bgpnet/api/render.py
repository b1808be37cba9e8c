"""Render the agent's status (the /status JSON) as a short text table for operators."""

from __future__ import annotations

from typing import Any


def render_status(data: dict[str, Any]) -> str:
    exabgp = data["exabgp"]
    routes = data["routes"]
    lines = [
        f"node {data['node']} ({data['node_address']}, AS {data['asn']})  "
        f"pod_cidr {data['pod_cidr']}  bridge {data['bridge']}",
        f"exabgp pid {exabgp['pid'] or '-'}  restarts {exabgp['restarts']}  "
        f"relay {'connected' if exabgp['relay_connected'] else 'disconnected'}",
        f"routes installed {routes['installed']}  desired {routes['desired']}  "
        f"pending {routes['pending']}",
        "",
        f"{'PEER':<18} {'NAME':<12} {'STATE':<10} {'FOR':>8} {'ROUTES':>7}  REASON",
    ]
    for peer in data["peers"]:
        lines.append(
            f"{peer['address']:<18} {peer['name'][:12]:<12} {peer['state']:<10} "
            f"{_duration(peer['since_seconds']):>8} {peer['routes_received']:>7}  {peer['reason'] or '-'}")
    if data["rejected"]:
        rejected = ", ".join(f"{reason}={count}" for reason, count in sorted(data["rejected"].items()))
        lines += ["", f"rejected by import policy: {rejected}"]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"

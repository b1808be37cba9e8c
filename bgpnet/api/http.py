"""The agent's HTTP API (aiohttp): ``/healthz``, ``/status`` (JSON) and ``/metrics``.

Handlers only read the agent's state; nothing here changes routes or links.
``/healthz`` returns 200 when ExaBGP runs and its API process is connected, else 503.
``/metrics`` is the Prometheus text format, version 0.0.4.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bgpnet.agent import Agent

log = logging.getLogger("bgpnet.api")


def status(agent: "Agent") -> dict[str, Any]:
    """Return the agent's state as plain data, for /status and ``bgpnet status``."""
    cfg = agent.cfg
    rib = agent.rib
    fib = agent.fib
    now = time.time()
    peers = []
    for address, peer in sorted(agent.peers.items()):
        received = rib.routes_from(_peer_id(address)) if rib is not None else 0
        peers.append({
            "address": address,
            "name": peer.name,
            "state": peer.state,
            "since_seconds": round(now - peer.since, 1),
            "reason": peer.reason,
            "routes_received": received,
            "routes_stale": rib.stale_count(_peer_id(address)) if rib is not None else 0,
            "graceful_restart_families": list(peer.restart_families),
        })
    return {
        "node": cfg.node.name,
        "node_address": str(cfg.node.address),
        "asn": cfg.node.asn,
        "pod_cidr": str(cfg.pod_cidr),
        "bridge": cfg.bridge.name,
        "uptime_seconds": round(now - agent.started_at, 1),
        "exabgp": {
            "pid": agent.supervisor.pid,
            "restarts": agent.supervisor.restarts,
            "relay_connected": agent.relay_connected,
        },
        "peers": peers,
        "routes": {
            "installed": len(fib.kernel) if fib is not None else 0,
            "desired": len(rib.desired()) if rib is not None else 0,
            "pending": len(fib.dirty) if fib is not None else 0,
            "swept": fib.swept if fib is not None else False,
        },
        "rejected": dict(rib.rejected) if rib is not None else {},
        "counters": {**vars(agent.counters), **(vars(fib.counters) if fib is not None else {}),
                     "decoder_malformed": agent.decoder.stats.malformed},
    }


def metrics(agent: "Agent") -> str:
    data = status(agent)
    node = data["node"]
    lines = [
        "# HELP bgpnet_routes_installed Kernel routes of the bgpnet protocol.",
        "# TYPE bgpnet_routes_installed gauge",
        f'bgpnet_routes_installed{{node="{node}"}} {data["routes"]["installed"]}',
        "# HELP bgpnet_peer_up 1 when the BGP session is established.",
        "# TYPE bgpnet_peer_up gauge",
    ]
    for peer in data["peers"]:
        up = 1 if peer["state"] == "up" else 0
        lines.append(f'bgpnet_peer_up{{node="{node}",peer="{peer["address"]}"}} {up}')
    lines += [
        "# HELP bgpnet_routes_received Routes accepted from the peer.",
        "# TYPE bgpnet_routes_received gauge",
    ]
    for peer in data["peers"]:
        lines.append(f'bgpnet_routes_received{{node="{node}",peer="{peer["address"]}"}} '
                     f'{peer["routes_received"]}')
    lines += [
        "# HELP bgpnet_routes_rejected_total Announced routes rejected by import policy.",
        "# TYPE bgpnet_routes_rejected_total counter",
    ]
    for reason, count in sorted(data["rejected"].items()):
        lines.append(f'bgpnet_routes_rejected_total{{node="{node}",reason="{reason}"}} {count}')
    lines += [
        "# HELP bgpnet_exabgp_restarts_total ExaBGP restarts by the supervisor.",
        "# TYPE bgpnet_exabgp_restarts_total counter",
        f'bgpnet_exabgp_restarts_total{{node="{node}"}} {data["exabgp"]["restarts"]}',
        "# HELP bgpnet_malformed_lines_total ExaBGP output lines that could not be decoded.",
        "# TYPE bgpnet_malformed_lines_total counter",
        f'bgpnet_malformed_lines_total{{node="{node}"}} {data["counters"]["malformed_lines"]}',
        "# HELP bgpnet_route_failures_total Kernel route writes that failed.",
        "# TYPE bgpnet_route_failures_total counter",
        f'bgpnet_route_failures_total{{node="{node}"}} {data["counters"]["route_failures"]}',
    ]
    return "\n".join(lines) + "\n"


async def serve(agent: "Agent") -> None:
    """Serve the API on ``http.listen`` until cancelled."""
    assert agent.cfg.http_listen is not None
    host, port = agent.cfg.http_listen

    async def healthz(_: web.Request) -> web.Response:
        healthy = agent.supervisor.pid is not None and agent.relay_connected
        return web.Response(status=200 if healthy else 503, text="ok\n" if healthy else "not ready\n")

    async def status_handler(_: web.Request) -> web.Response:
        return web.json_response(status(agent))

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(text=metrics(agent), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status_handler)
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            # The API is for operators; the node keeps routing without it.
            log.warning("http api not started node=%s listen=%s:%d error=%s",
                        agent.node, host, port, exc)
            return
        log.info("http api listening node=%s listen=%s:%d", agent.node, host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _peer_id(address: str):
    import ipaddress

    from bgpnet.model import PeerId

    return PeerId(ipaddress.ip_address(address))

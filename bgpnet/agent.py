"""The node agent's composition root: node setup, ExaBGP, RIB and the route writer.

Theory of operation:
1. Node setup runs first and synchronously: the protocol name, the bridge with the pod
   gateway, IPv4/IPv6 forwarding, then the node state file for the pod-attachment code.
   The config was validated before this point; a setup error stops the agent before
   ExaBGP starts.
2. One ``TaskGroup`` owns every task: the ExaBGP supervisor, the relay listener, the
   route writer loop, the periodic resync and the HTTP API.
3. The relay connection is read continuously by ``_read_relay``. It decodes lines into
   events and applies them to the RIB, which is cheap and pure, then marks the touched
   prefixes dirty. It never waits for netlink, so ExaBGP is never blocked by the kernel.
4. ``_write_routes`` takes the dirty set, plans it against the routes the agent knows
   are in the kernel, and applies the plan in a worker thread. Many changes to one
   prefix that arrive during a write coalesce into one entry of the next dirty set.
5. ``_resync`` dumps the kernel's routes of our protocol every ``resync_seconds`` and
   plans every prefix again, which repairs routes removed or changed by someone else.
   Routes of our protocol found at start stay until every peer has sent End-of-RIB,
   or until ``startup_sweep_seconds`` have passed; then the ones no peer confirmed go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bgpnet import nodestate
from bgpnet.bgp.decoder import Decoder
from bgpnet.bgp.policy import ImportPolicy
from bgpnet.bgp.rib import Rib
from bgpnet.config import AgentConfig
from bgpnet.exabgp.supervisor import Supervisor
from bgpnet.kernel import links, routes
from bgpnet.kernel.plan import Plan, plan_routes
from bgpnet.model import (Ack, Address, Announce, EndOfRib, Event, KernelRoute, Malformed,
                          Notification, PeerId, PeerState, Prefix, Withdraw)

log = logging.getLogger("bgpnet.agent")

SOCKET_NAME = "exabgp.sock"
# Per-route INFO lines up to this many changes in one write; above it one summary line.
ROUTE_LOG_LIMIT = 100
MALFORMED_LOG_LIMIT = 20  # WARNING lines for malformed input; the rest are counted only


@dataclass
class PeerStatus:
    address: str
    name: str
    state: str = "idle"
    since: float = field(default_factory=time.time)
    reason: str = ""
    updates: int = 0


@dataclass
class Counters:
    malformed_lines: int = 0
    command_errors: int = 0
    route_failures: int = 0
    writes: int = 0
    routes_added: int = 0
    routes_replaced: int = 0
    routes_deleted: int = 0


def run(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT; return the process exit status."""
    agent = Agent(cfg)
    # pyroute2's synchronous API runs an event loop of its own, so node setup and the
    # first route dump happen before ours starts; later dumps run in worker threads.
    agent.setup_node()
    return asyncio.run(agent.run())


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.node = cfg.node.name
        self.socket_path = cfg.state_dir / SOCKET_NAME
        self.supervisor = Supervisor(cfg, self.socket_path)
        self.decoder = Decoder()
        self.rib: Rib | None = None
        self.kernel: dict[Prefix, KernelRoute] = {}
        self.dirty: set[Prefix] = set()
        self.counters = Counters()
        self.peers = {str(p.address): PeerStatus(str(p.address), p.label) for p in cfg.peers}
        self.started_at = time.time()
        self.swept = False
        self.relay_connected = False
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._relay_writer: asyncio.StreamWriter | None = None
        self._writer: routes.RouteWriter | None = None
        self._write_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        self.socket_path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._accept_relay, path=str(self.socket_path),
                                                 limit=1 << 20)
        self.socket_path.chmod(0o600)
        try:
            async with asyncio.TaskGroup() as tasks:
                supervisor_task = tasks.create_task(self.supervisor.run())
                workers = [
                    tasks.create_task(self._write_routes()),
                    tasks.create_task(self._resync()),
                    tasks.create_task(self._sweep_after_grace()),
                ]
                if self.cfg.http_listen is not None:
                    from bgpnet.api.http import serve

                    workers.append(tasks.create_task(serve(self)))
                stop_waiter = tasks.create_task(self._stop.wait())
                await asyncio.wait([supervisor_task, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
                await self.supervisor.stop()
                for task in (*workers, stop_waiter):
                    task.cancel()
        finally:
            server.close()
            if self._relay_writer is not None:
                self._relay_writer.close()
            await self._remove_all_routes()
            self._writer.close()
            self.socket_path.unlink(missing_ok=True)
        log.info("agent stopped node=%s", self.node)
        return 0

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("agent stopping node=%s signal=%s", self.node, sig.name)
        self._stop.set()

    def setup_node(self) -> None:
        """Set up the bridge, forwarding and node state, and read our routes in the kernel."""
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if routes.ensure_protocol_name(cfg.route_protocol):
                log.info("route protocol named node=%s protocol=%d name=bgpnet", self.node, cfg.route_protocol)
        except OSError as exc:
            # The name is cosmetic (ip route prints the number instead); never fatal.
            log.warning("route protocol not named node=%s protocol=%d error=%s",
                        self.node, cfg.route_protocol, exc)
        changes = links.ensure_bridge(cfg.bridge.name, cfg.gateway, cfg.bridge.mtu)
        if links.enable_forwarding(cfg.pod_cidr.version):
            log.info("node setup node=%s change=forwarding-enabled family=ipv%d",
                     self.node, cfg.pod_cidr.version)
        local = set(links.local_addresses()) | {cfg.node.address, cfg.gateway.ip}
        # NOTE: addresses added to the node after start are not known to the import policy.
        policy = ImportPolicy(
            cluster_cidrs=(cfg.cluster_cidr,),
            own_prefixes=(cfg.pod_cidr,),
            local_addresses=frozenset(local),
        )
        self.rib = Rib(policy, node=self.node, router_id=cfg.node.router_id)
        path = nodestate.write(cfg.state_dir, nodestate.NodeState(
            node=self.node, pod_cidr=cfg.pod_cidr, gateway=cfg.gateway.ip,
            bridge=cfg.bridge.name, mtu=cfg.bridge.mtu))
        log.info("node ready node=%s pod_cidr=%s gateway=%s bridge=%s changes=%d state=%s",
                 self.node, cfg.pod_cidr, cfg.gateway, cfg.bridge.name, len(changes), path)
        self._writer = routes.RouteWriter(cfg.route_protocol)
        self.kernel = routes.dump_routes(cfg.route_protocol)
        if self.kernel:
            log.info("kernel routes found at start node=%s count=%d (kept until peers confirm them)",
                     self.node, len(self.kernel))

    # -- ExaBGP input ----------------------------------------------------------

    async def _accept_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._relay_writer is not None:
            log.warning("relay replaced node=%s (a new ExaBGP API process connected)", self.node)
            self._relay_writer.close()
        self._relay_writer = writer
        self.relay_connected = True
        log.info("relay connected node=%s", self.node)
        try:
            while data := await reader.read(1 << 16):
                for event in self.decoder.feed(data):
                    self._handle(event)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.warning("relay connection failed node=%s error=%s", self.node, exc)
        finally:
            if self._relay_writer is writer:
                self._relay_writer = None
                self.relay_connected = False
            writer.close()
            log.info("relay disconnected node=%s", self.node)
            # ExaBGP sends no state change when its API process is replaced, and a new
            # ExaBGP starts with no sessions: treat every session as down.
            for address, status in self.peers.items():
                if status.state == "up":
                    self._handle(PeerState(PeerId(_ip(address)), "down", "relay disconnected"))

    def _handle(self, event: Event) -> None:
        assert self.rib is not None
        if isinstance(event, (Announce, Withdraw, EndOfRib, PeerState)):
            changed = self.rib.apply(event)
            if changed:
                self.dirty |= changed
                self._wake.set()
        if isinstance(event, PeerState):
            self._on_peer_state(event)
        elif isinstance(event, (Announce, Withdraw)):
            status = self.peers.get(str(event.peer))
            if status is not None:
                status.updates += 1
        elif isinstance(event, EndOfRib):
            log.info("end-of-rib received node=%s peer=%s family=%s", self.node, event.peer, event.afi)
            if not self.swept and self._all_peers_sent_eor():
                self._wake.set()
        elif isinstance(event, Notification):
            log.warning("notification node=%s peer=%s code=%d subcode=%d data=%s",
                        self.node, event.peer, event.code, event.subcode, event.data)
        elif isinstance(event, Ack):
            if not event.ok:
                self.counters.command_errors += 1
                log.warning("exabgp rejected a command node=%s reply=%s", self.node, event.text)
        elif isinstance(event, Malformed):
            self.counters.malformed_lines += 1
            if self.counters.malformed_lines <= MALFORMED_LOG_LIMIT:
                log.warning("malformed exabgp line node=%s reason=%s excerpt=%r",
                            self.node, event.reason, event.excerpt)

    def _on_peer_state(self, event: PeerState) -> None:
        status = self.peers.setdefault(str(event.peer), PeerStatus(str(event.peer), str(event.peer)))
        if status.state == event.state:
            return
        status.state = event.state
        status.since = time.time()
        status.reason = event.reason
        level = logging.WARNING if event.state == "down" else logging.INFO
        log.log(level, "session %s node=%s peer=%s reason=%s", event.state, self.node,
                event.peer, event.reason or "-")

    def _all_peers_sent_eor(self) -> bool:
        assert self.rib is not None
        family = "ipv4" if self.cfg.pod_cidr.version == 4 else "ipv6"
        return all(self.rib.eor_seen(PeerId(p.address), family) for p in self.cfg.peers)

    def send_command(self, line: str) -> bool:
        """Write one API command to ExaBGP; return False when no relay is connected."""
        if self._relay_writer is None:
            return False
        self._relay_writer.write(line.encode())
        return True

    # -- route writing ---------------------------------------------------------

    async def _write_routes(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.swept and self._all_peers_sent_eor():
                await self._sweep("every peer sent end-of-rib")
            if not self.dirty:
                continue
            dirty, self.dirty = self.dirty, set()
            desired = self._desired(dirty)
            await self._apply(plan_routes(desired, self.kernel, prefixes=dirty))

    def _desired(self, prefixes: set[Prefix] | None) -> dict[Prefix, KernelRoute]:
        assert self.rib is not None
        if prefixes is None:
            return self.rib.desired()
        desired = {}
        for prefix in prefixes:
            route = self.rib.desired_route(prefix)
            if route is not None:
                desired[prefix] = route
        return desired

    async def _apply(self, plan: Plan) -> None:
        if not plan:
            return
        assert self._writer is not None
        async with self._write_lock:
            result = await asyncio.to_thread(self._writer.apply, plan)
        self.counters.writes += 1
        failed = {route.prefix for route, _, _ in result.failed}
        for route, action, errno in result.failed:
            self.counters.route_failures += 1
            log.warning("route %s failed node=%s prefix=%s nexthop=%s errno=%d",
                        action, self.node, route.prefix, _hops(route), errno)
            # Retry at the next resync, which re-reads the kernel first.
        for route in (*plan.add, *plan.replace):
            if route.prefix not in failed:
                self.kernel[route.prefix] = route
        for route in plan.delete:
            if route.prefix not in failed:
                self.kernel.pop(route.prefix, None)
        self.counters.routes_added += len(plan.add)
        self.counters.routes_replaced += len(plan.replace)
        self.counters.routes_deleted += len(plan.delete)
        self._log_plan(plan, failed)

    def _log_plan(self, plan: Plan, failed: set[Prefix]) -> None:
        total = len(plan.add) + len(plan.replace) + len(plan.delete)
        if total > ROUTE_LOG_LIMIT:
            log.info("routes written node=%s installed=%d replaced=%d withdrawn=%d failed=%d",
                     self.node, len(plan.add), len(plan.replace), len(plan.delete), len(failed))
            return
        for word, batch in (("installed", plan.add), ("replaced", plan.replace), ("withdrawn", plan.delete)):
            for route in batch:
                if route.prefix not in failed:
                    log.info("route %s node=%s prefix=%s nexthop=%s", word, self.node,
                             route.prefix, _hops(route))

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.resync_seconds)
            await self.resync()

    async def resync(self) -> None:
        """Re-read the kernel's routes of our protocol and plan every prefix again."""
        async with self._write_lock:
            self.kernel = await asyncio.to_thread(routes.dump_routes, self.cfg.route_protocol)
        plan = plan_routes(self._desired(None), self.kernel, delete_extra=self.swept)
        if plan:
            log.warning("resync repairs kernel routes node=%s add=%d replace=%d delete=%d",
                        self.node, len(plan.add), len(plan.replace), len(plan.delete))
        await self._apply(plan)

    async def _sweep_after_grace(self) -> None:
        await asyncio.sleep(self.cfg.startup_sweep_seconds)
        if not self.swept:
            await self._sweep(f"{self.cfg.startup_sweep_seconds:.0f} s after start")

    async def _sweep(self, why: str) -> None:
        self.swept = True
        plan = plan_routes(self._desired(None), self.kernel, delete_extra=True)
        stale = len(plan.delete)
        log.info("sweeping unconfirmed routes node=%s reason=%r stale=%d", self.node, why, stale)
        await self._apply(plan)

    async def _remove_all_routes(self) -> None:
        if self._writer is None or not self.kernel:
            return
        plan = plan_routes({}, self.kernel)
        log.info("removing routes on stop node=%s count=%d", self.node, len(plan.delete))
        with contextlib.suppress(Exception):
            result = self._writer.apply(plan)
            if result.failed:
                log.warning("routes not removed on stop node=%s count=%d", self.node, len(result.failed))
        self.kernel.clear()


def _hops(route: KernelRoute) -> str:
    return ",".join(str(hop) for hop in route.nexthops)


def _ip(text: str) -> Address:
    import ipaddress

    return ipaddress.ip_address(text)


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME

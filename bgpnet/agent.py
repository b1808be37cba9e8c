"""The node agent's composition root: node setup, ExaBGP, RIB and kernel routes.

Theory of operation:
1. ``setup_node`` runs first, before the event loop: the protocol name, the bridge
   with the pod gateway, forwarding, and a dump of our routes already in the kernel.
   The node state file for the pod-attachment code follows once the control socket
   of the CNI plugin accepts connections. The config was validated before
   this point; a setup error stops the agent before ExaBGP starts.
2. One ``TaskGroup`` owns every task: the ExaBGP supervisor, the route writer
   (``FibSync.run``), the periodic resync, the stale-route timers, the watchdog, the
   HTTP API and the control socket of the CNI plugin. The relay listener's connection handler belongs to the asyncio server.
3. The relay connection is read continuously. Each chunk is decoded into events and
   applied to the RIB, which is cheap and pure, and the touched prefixes are marked
   dirty. Reading never waits for netlink, so ExaBGP is never blocked by the kernel.
4. Graceful restart (RFC 4724). As a helper: when a session goes down without a
   NOTIFICATION and the peer's capability listed our family, its routes stay as stale
   until its End-of-RIB in the next session (then unrefreshed ones go) or until its
   restart time passes. As the restarting speaker: SIGTERM stops ExaBGP without a
   Cease, so peers keep our pod CIDR, and the agent leaves its kernel routes in place;
   at the next start they are kept until every peer has sent End-of-RIB, or
   ``restart_time`` has passed, and then the routes no peer confirmed are swept.
5. Drain (SIGUSR1, or ``bgpnet agent --drain``): withdraw the pod CIDR, stop ExaBGP with
   a Cease, delete our kernel routes and exit, for taking a node out for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import ipaddress
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bgpnet import nodestate
from bgpnet.api.control import serve_control
from bgpnet.bgp import commands
from bgpnet.bgp.decoder import Decoder
from bgpnet.bgp.policy import ImportPolicy
from bgpnet.bgp.rib import Rib
from bgpnet.config import AgentConfig
from bgpnet.errors import NetlinkError, NodeSetupError
from bgpnet.exabgp.supervisor import Supervisor
from bgpnet.kernel import links, routes
from bgpnet.kernel.sync import FibSync
from bgpnet.model import (Ack, Announce, EndOfRib, Event, Malformed, Notification, PeerId,
                          PeerOpen, PeerState, Withdraw)

log = logging.getLogger("bgpnet.agent")

SOCKET_NAME = "exabgp.sock"
PID_NAME = "agent.pid"
LOCK_NAME = "agent.lock"
MALFORMED_LOG_LIMIT = 20  # WARNING lines for malformed input; the rest are counted only
WATCHDOG_INTERVAL = 10.0  # seconds between probes of an idle ExaBGP
WATCHDOG_TIMEOUT = 30.0  # seconds an ExaBGP may take to acknowledge a command
DRAIN_WAIT = 2.0  # seconds for the withdraw of the pod CIDR to reach peers


@dataclass
class PeerStatus:
    address: str
    name: str
    state: str = "idle"
    since: float = field(default_factory=time.time)
    reason: str = ""
    updates: int = 0
    restart_time: int | None = None  # the peer's graceful-restart time, if advertised
    restart_families: tuple[str, ...] = ()
    stale_until: float | None = None  # monotonic deadline of routes kept while it restarts


@dataclass
class Counters:
    malformed_lines: int = 0
    command_errors: int = 0
    watchdog_restarts: int = 0


def run(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM, SIGINT or SIGUSR1; return the process exit status."""
    agent = Agent(cfg)
    # pyroute2's synchronous API runs an event loop of its own and fails inside ours.
    # So node setup and the first route dump run before ours starts, and later
    # netlink work runs in worker threads.
    agent.setup_node()
    # A burst of 100,000 prefixes allocates millions of short-lived objects, and with the
    # default thresholds each full collection scans the whole RIB again. With these,
    # 100,000 /32 reached the FIB in 2.8-2.9 s instead of 3.7-4.0 s (bench/run.py, 2 cores).
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    return asyncio.run(agent.run())


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.node = cfg.node.name
        self.family = f"ipv{cfg.pod_cidr.version}"
        self.socket_path = cfg.state_dir / SOCKET_NAME
        self.supervisor = Supervisor(cfg, self.socket_path)
        self.decoder = Decoder()
        self.rib: Rib | None = None
        self.fib: FibSync | None = None
        self.counters = Counters()
        self.peers = {str(p.address): PeerStatus(str(p.address), p.label) for p in cfg.peers}
        self.started_at = time.time()
        self.relay_connected = False
        self._stop = asyncio.Event()
        self._draining = False
        self._relay_writer: asyncio.StreamWriter | None = None
        self._unacked: list[float] = []  # send times of commands not yet acknowledged
        self._lock_fd: int | None = None  # flock on state_dir/agent.lock, held until exit

    # -- lifecycle -------------------------------------------------------------

    def setup_node(self) -> None:
        """Set up the bridge, forwarding and node state, and read our routes in the kernel."""
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_state_dir(cfg.state_dir)

        try:
            if routes.ensure_protocol_name(cfg.route_protocol):
                log.info("route protocol named node=%s protocol=%d name=bgpnet", self.node, cfg.route_protocol)
        except OSError as exc:
            # The name is cosmetic (ip route prints the number instead); never fatal.
            log.warning("route protocol not named node=%s protocol=%d error=%s",
                        self.node, cfg.route_protocol, exc)

        changes = links.ensure_bridge(cfg.bridge.name, cfg.gateway, cfg.bridge.mtu)
        if links.enable_forwarding(cfg.pod_cidr.version):
            log.info("forwarding enabled node=%s family=%s", self.node, self.family)

        local = set(links.local_addresses()) | {cfg.node.address, cfg.gateway.ip}
        # NOTE: addresses added to the node after start are not known to the import policy.
        policy = ImportPolicy(
            cluster_cidrs=(cfg.cluster_cidr,),
            own_prefixes=(cfg.pod_cidr,),
            local_addresses=frozenset(local),
        )
        self.rib = Rib(policy, node=self.node, router_id=cfg.node.router_id)
        log.info("node set up node=%s pod_cidr=%s gateway=%s bridge=%s changes=%d",
                 self.node, cfg.pod_cidr, cfg.gateway, cfg.bridge.name, len(changes))
        if not cfg.peers:
            log.warning("no peers configured node=%s: the pod CIDR is not announced and no "
                        "routes are learned; add peers to the config", self.node)

        self.fib = FibSync(self.node, cfg.route_protocol, self.rib.desired_route, self.rib.desired)
        found = self.fib.open()
        if found:
            log.info("kernel routes found at start node=%s count=%d (kept until peers confirm them)",
                     self.node, found)

    async def run(self) -> int:
        assert self.fib is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        loop.add_signal_handler(signal.SIGUSR1, self._request_drain)
        pid_path = self.cfg.state_dir / PID_NAME
        pid_path.write_text(f"{os.getpid()}\n")
        self.socket_path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._accept_relay, path=str(self.socket_path),
                                                 limit=1 << 20)
        self.socket_path.chmod(0o600)
        try:
            async with asyncio.TaskGroup() as tasks:
                supervisor_task = tasks.create_task(self.supervisor.run())
                workers = [
                    tasks.create_task(self.fib.run(self._before_write)),
                    tasks.create_task(self._resync()),
                    tasks.create_task(self._timers()),
                    tasks.create_task(self._watchdog()),
                ]
                if self.cfg.http_listen is not None:
                    from bgpnet.api.http import serve

                    workers.append(tasks.create_task(serve(self)))
                control_ready = asyncio.Event()
                workers.append(tasks.create_task(serve_control(self, control_ready)))
                await control_ready.wait()
                self.write_node_state()
                stop_waiter = tasks.create_task(self._stop.wait())
                await asyncio.wait([supervisor_task, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
                await self._shutdown()
                # The supervisor may be sleeping in its restart backoff.
                for task in (*workers, stop_waiter, supervisor_task):
                    task.cancel()
        finally:
            server.close()
            if self._relay_writer is not None:
                self._relay_writer.close()
            self.fib.close()
            self.socket_path.unlink(missing_ok=True)
            pid_path.unlink(missing_ok=True)
        log.info("agent stopped node=%s", self.node)
        return 0

    def write_node_state(self) -> None:
        """Write node.json; called once the control socket accepts connections, so a CNI
        plugin that finds node.json also finds the agent."""
        cfg = self.cfg
        path = nodestate.write(cfg.state_dir, nodestate.NodeState(
            node=self.node, pod_cidr=cfg.pod_cidr, gateway=cfg.gateway.ip,
            bridge=cfg.bridge.name, mtu=cfg.bridge.mtu))
        log.info("node ready node=%s state=%s", self.node, path)

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("agent stopping node=%s signal=%s", self.node, sig.name)
        self._stop.set()

    def _request_drain(self) -> None:
        log.info("agent draining node=%s prefix=%s", self.node, self.cfg.pod_cidr)
        self._draining = True
        self._stop.set()

    async def _shutdown(self) -> None:
        assert self.fib is not None
        if self._draining:
            if self.send_command(commands.withdraw_route(self.cfg.pod_cidr)):
                await self._wait_acked(DRAIN_WAIT)
            await self.supervisor.stop(graceful=False)
            await self._remove_routes()
        elif self.cfg.graceful_restart:
            # No Cease: peers keep our pod CIDR for restart_time, and the kernel keeps ours.
            await self.supervisor.stop(graceful=True)
            log.info("routes kept for restart node=%s count=%d restart_time=%d",
                     self.node, len(self.fib.kernel), self.cfg.restart_time)
        else:
            await self.supervisor.stop(graceful=False)
            await self._remove_routes()

    async def _remove_routes(self) -> None:
        assert self.fib is not None
        try:
            failed = await self.fib.remove_all()
        except (NetlinkError, OSError) as exc:
            log.warning("routes not removed on stop node=%s error=%s", self.node, exc)
            return
        if failed:
            log.warning("routes not removed on stop node=%s count=%d", self.node, failed)

    # -- ExaBGP input ----------------------------------------------------------

    async def _accept_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._relay_writer is not None:
            log.warning("relay replaced node=%s (a new ExaBGP API process connected)", self.node)
            self._relay_writer.close()
        self._relay_writer = writer
        self._unacked.clear()
        # A partial line of the previous connection must not be joined to this one's first.
        self.decoder = Decoder()
        self.relay_connected = True
        log.info("relay connected node=%s", self.node)
        try:
            while data := await reader.read(1 << 16):
                for event in self.decoder.feed(data):
                    self._handle(event)
        except ConnectionError as exc:
            log.warning("relay connection failed node=%s error=%s", self.node, exc)
        finally:
            if self._relay_writer is writer:
                self._relay_writer = None
                self.relay_connected = False
                self._on_relay_lost()
            writer.close()

    def _on_relay_lost(self) -> None:
        # ExaBGP reports no state change when it exits: every session it had is gone.
        log.warning("relay disconnected node=%s", self.node)
        if not self._stop.is_set():
            # When only the relay died, ExaBGP respawns it but replays neither session
            # states nor routes, so this agent could never learn them again. Restarting
            # ExaBGP restarts the sessions, without a Cease.
            self.supervisor.restart()
        for address, status in self.peers.items():
            if status.state in ("up", "connected"):
                peer = PeerId(ipaddress.ip_address(address))
                retain = self.cfg.graceful_restart and status.state == "up"
                self._session_down(peer, status, "exabgp stopped", retain)

    def _handle(self, event: Event) -> None:
        assert self.rib is not None and self.fib is not None
        if isinstance(event, (Announce, Withdraw)):
            self.fib.mark(self.rib.apply(event))
            status = self.peers.get(str(event.peer))
            if status is not None:
                status.updates += 1
        elif isinstance(event, PeerState):
            self._on_peer_state(event)
        elif isinstance(event, EndOfRib):
            self._on_end_of_rib(event)
        elif isinstance(event, PeerOpen):
            status = self._status(event.peer)
            status.restart_time = event.restart_time
            status.restart_families = event.restart_families
        elif isinstance(event, Notification):
            log.warning("notification node=%s peer=%s code=%d subcode=%d data=%s",
                        self.node, event.peer, event.code, event.subcode, event.data)
        elif isinstance(event, Ack):
            if self._unacked:
                self._unacked.pop(0)
            if not event.ok:
                self.counters.command_errors += 1
                log.warning("exabgp rejected a command node=%s reply=%s", self.node, event.text)
        elif isinstance(event, Malformed):
            self.counters.malformed_lines += 1
            if self.counters.malformed_lines <= MALFORMED_LOG_LIMIT:
                log.warning("malformed exabgp line node=%s reason=%s excerpt=%r",
                            self.node, event.reason, event.excerpt)

    def _status(self, peer: PeerId) -> PeerStatus:
        return self.peers.setdefault(str(peer), PeerStatus(str(peer), str(peer)))

    def _on_peer_state(self, event: PeerState) -> None:
        status = self._status(event.peer)
        if status.state == event.state:
            return
        previous = status.state
        if event.state == "down" and status.stale_until is not None:
            # A failed attempt of a restarting peer: its stale routes wait for its
            # restart time (RFC 4724 section 4.2), not for this attempt.
            status.state = "down"
            status.reason = event.reason
            log.info("session down node=%s peer=%s reason=%s stale routes kept",
                     self.node, event.peer, event.reason or "-")
            return
        if event.state == "down":
            # RFC 4724 section 4.2: routes are kept only when the session ended without a
            # NOTIFICATION and the peer's capability listed the family.
            retain = (previous == "up" and not event.reason.startswith("notification")
                      and f"{self.family} unicast" in status.restart_families)
            self._session_down(event.peer, status, event.reason, retain)
            return
        status.state = event.state
        status.since = time.time()
        status.reason = event.reason
        log.info("session %s node=%s peer=%s", event.state, self.node, event.peer)

    def _session_down(self, peer: PeerId, status: PeerStatus, reason: str, retain: bool) -> None:
        assert self.rib is not None and self.fib is not None
        status.state = "down"
        status.since = time.time()
        status.reason = reason
        if retain:
            restart_time = status.restart_time or self.cfg.restart_time
            kept = self.rib.mark_stale(peer)
            status.stale_until = time.monotonic() + restart_time
            log.warning("session down node=%s peer=%s reason=%s routes kept as stale=%d for %d s",
                        self.node, peer, reason or "-", kept, restart_time)
            return
        status.stale_until = None
        log.warning("session down node=%s peer=%s reason=%s", self.node, peer, reason or "-")
        self.fib.mark(self.rib.apply(PeerState(peer, "down", reason)))

    def _on_end_of_rib(self, event: EndOfRib) -> None:
        assert self.rib is not None and self.fib is not None
        self.rib.apply(event)
        log.info("end-of-rib received node=%s peer=%s family=%s", self.node, event.peer, event.afi)
        status = self._status(event.peer)
        if event.afi == self.family and status.stale_until is not None:
            status.stale_until = None
            self.fib.mark(self.rib.flush_stale(event.peer))
        self.fib.wake()

    def send_command(self, line: str) -> bool:
        """Write one API command to ExaBGP; return False when no relay is connected."""
        if self._relay_writer is None:
            return False
        self._relay_writer.write(line.encode())
        self._unacked.append(time.monotonic())
        return True

    async def _wait_acked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._unacked and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- periodic work ---------------------------------------------------------

    async def _before_write(self) -> None:
        assert self.fib is not None
        if not self.fib.swept and self._all_peers_sent_eor():
            await self.fib.sweep("every peer sent end-of-rib")

    def _all_peers_sent_eor(self) -> bool:
        assert self.rib is not None
        return all(self.rib.eor_seen(PeerId(p.address), self.family) for p in self.cfg.peers)

    async def _resync(self) -> None:
        """Resync every ``resync_seconds``, or one second after a failed write or dump."""
        assert self.fib is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.fib.resync_needed.wait(), self.cfg.resync_seconds)
                await asyncio.sleep(1.0)
            await self.fib.resync()

    async def _timers(self) -> None:
        """Expire stale routes of peers that did not come back, and the start-up sweep."""
        assert self.rib is not None and self.fib is not None
        sweep_at = time.monotonic() + self.cfg.restart_time
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if not self.fib.swept and now >= sweep_at:
                await self.fib.sweep(f"no end-of-rib from every peer within {self.cfg.restart_time} s")
            for address, status in self.peers.items():
                if status.stale_until is not None and now >= status.stale_until:
                    status.stale_until = None
                    peer = PeerId(ipaddress.ip_address(address))
                    log.warning("restart time expired node=%s peer=%s stale=%d", self.node, peer,
                                self.rib.stale_count(peer))
                    self.fib.mark(self.rib.flush_stale(peer))

    async def _watchdog(self) -> None:
        """Restart an ExaBGP that stops acknowledging commands."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            if self._relay_writer is None:
                continue
            if not self._unacked:
                self.send_command(commands.probe())
                continue
            waited = time.monotonic() - self._unacked[0]
            if waited > WATCHDOG_TIMEOUT:
                self.counters.watchdog_restarts += 1
                log.warning("exabgp not responding node=%s waited=%.0f s, restarting it", self.node, waited)
                self._unacked.clear()
                self.supervisor.restart()


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def lock_state_dir(state_dir: Path) -> int:
    """Take the state directory's agent lock and return its descriptor.

    Two agents on one state directory would replace each other's sockets and pid file.
    The descriptor is close-on-exec, so ExaBGP does not keep the lock after the agent dies.
    """
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = read_pid(state_dir)
        raise NodeSetupError(
            f"another agent (pid {pid or 'unknown'}) is running with state directory {state_dir}; "
            "stop it first, or give this one another --state-dir") from None
    return fd


def running_agent_pid(state_dir: Path) -> int | None:
    """Return the pid of the agent that holds the state directory's lock, or None."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(state_dir)
    finally:
        os.close(fd)
    return None  # the lock was free: a pid file left behind names no agent


def read_pid(state_dir: Path) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((state_dir / PID_NAME).read_text().strip())
    return None

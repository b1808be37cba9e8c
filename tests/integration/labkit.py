"""Helpers shared by the lab-based integration tests: private lab copies, agents, observers.

A test lab is a copy of ``containerlab/`` and ``configs/`` in the test's temporary
directory with the lab renamed to ``bgpt<hex>``, so its namespaces never clash with a
user's ``bgpnet`` lab or with another test. Labs are driven through the CLI, as a user
would, and observed with ``ip -j``, ``ping`` and ``/proc``, never with bgpnet code.

``Pinger`` and ``RouteWatch`` run beside a fault: the first counts lost pings between
two pods, the second samples kernel routes every few milliseconds and records every
sample in which an expected route was missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent
BGPNET = [sys.executable, "-m", "bgpnet.cli"]
RUNTIME_ROOT = Path("/run/bgpnet/lab")
CONVERGE_TIMEOUT = 60.0
POD_CIDRS = {"node01": "10.244.1.0/24", "node02": "10.244.2.0/24", "node03": "10.244.3.0/24"}
NODE_ADDRESSES = {"node01": "192.168.1.11", "node02": "192.168.1.12", "node03": "192.168.1.13"}
PROTOCOL = "201"


def run(argv: list[str], check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def bgpnet(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*BGPNET, *args], capture_output=True, text=True, cwd=REPO, timeout=180)
    if check:
        assert result.returncode == 0, f"bgpnet {' '.join(args)}: {result.stderr}"
    return result


def routes(namespace: str, protocol: str | None = None, family: str = "-4") -> list[dict]:
    argv = ["ip", "-n", namespace, "-j", family, "route", "show"]
    if protocol:
        argv += ["proto", protocol]
    output = run(argv).stdout.strip()
    return json.loads(output) if output else []


def learned(namespace: str, family: str = "-4") -> dict[str, tuple[str, ...]]:
    """Return our protocol's routes in ``namespace`` as {prefix: sorted gateways}."""
    found = {}
    for route in routes(namespace, PROTOCOL, family):
        if "gateway" in route:
            gateways = (route["gateway"],)
        else:
            gateways = tuple(sorted(hop["gateway"] for hop in route.get("nexthops", [])))
        found[route["dst"]] = gateways
    return found


def poll(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def processes_mentioning(text: str) -> list[int]:
    """Return the PIDs whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def namespaces() -> set[str]:
    output = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return {entry["name"] for entry in json.loads(output)} if output else set()


def kill_namespace(name: str) -> None:
    """SIGKILL everything in namespace ``name`` and delete it (teardown of last resort)."""
    for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "delete", name], check=False)


# -- a private copy of the tor lab ---------------------------------------------------


@dataclass
class Lab:
    """A running private copy of the tor lab."""

    path: Path  # the copied topology file
    name: str  # bgpt<hex>
    configs: Path  # the copied configs directory
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)

    def ns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def runtime(self, node: str) -> Path:
        return RUNTIME_ROOT / self.name / node

    def agent_pid(self, node: str) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int((self.runtime(node) / "agent.pid").read_text().strip())
            return pid if pid_alive(pid) else None
        return None

    def agent_pids(self, node: str) -> list[int]:
        """Return every live agent process of ``node`` (normally one)."""
        marker = f"--state-dir {self.runtime(node)}"
        return [pid for pid in processes_mentioning(marker)
                if "bgpnet" in _cmdline(pid) and " agent " in _cmdline(pid)
                and not _cmdline(pid).startswith("ip ")]

    def exabgp_pids(self, node: str) -> list[int]:
        """Return the ExaBGP processes of ``node``'s agent (found by their config path)."""
        config = str(self.runtime(node) / "exabgp.conf")
        return [pid for pid in processes_mentioning(config) if "server" in _cmdline(pid)]

    def signal_agent(self, node: str, sig: signal.Signals) -> int:
        pids = self.agent_pids(node)
        assert len(pids) == 1, f"{node}: expected one agent process, found {pids}"
        os.kill(pids[0], sig)
        return pids[0]

    def wait_agent_gone(self, node: str, timeout: float = 30.0) -> bool:
        return poll(lambda: not self.agent_pids(node), timeout)

    def start_agent(self, node: str) -> subprocess.Popen:
        """Start ``node``'s agent again the way ``bgpnet lab up`` does; wait for node.json."""
        state = self.runtime(node)
        (state / "node.json").unlink(missing_ok=True)
        env = {**os.environ, "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
        argv = ["ip", "netns", "exec", self.ns(node), str(BIN_DIR / "bgpnet"), "agent",
                "--config", str(self.configs / f"{node}.yaml"), "--state-dir", str(state)]
        with open(state / "agent.log", "ab") as log_file:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.agents[node] = process
        assert poll(lambda: (state / "node.json").exists() or process.poll() is not None, 30.0)
        assert process.poll() is None, f"{node} agent exited: {self.log_tail(node)}"
        return process

    def log_tail(self, node: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.runtime(node) / "agent.log").read_text(errors="replace")
                             .splitlines()[-lines:])
        return "(no log)"

    def log_lines(self, node: str, pattern: str) -> list[str]:
        with contextlib.suppress(OSError):
            text = (self.runtime(node) / "agent.log").read_text(errors="replace")
            return [line for line in text.splitlines() if re.search(pattern, line)]
        return []

    def pods(self) -> dict[str, str]:
        """Return {pod namespace: address} from the lab manifest."""
        manifest = json.loads((RUNTIME_ROOT / self.name / "manifest.json").read_text())
        return {pod["namespace"]: pod["address"].split("/")[0] for pod in manifest["pods"]}

    def pod(self, node: str, index: int = 1) -> tuple[str, str]:
        namespace = f"{self.name}-{node}-pod{index}"
        return namespace, self.pods()[namespace]

    def expected_routes(self, node: str) -> set[str]:
        return {cidr for other, cidr in POD_CIDRS.items() if other != node}

    def converged(self) -> bool:
        return all(self.expected_routes(node) <= set(learned(self.ns(node))) for node in POD_CIDRS)

    def tor_dir(self) -> Path:
        return self.runtime("tor")

    def vtysh(self, command: str) -> str:
        return run(["vtysh", "--vty_socket", str(self.tor_dir()), "-c", command]).stdout

    def start_bgpd(self) -> None:
        tor = self.tor_dir()
        (tor / "bgpd.pid").unlink(missing_ok=True)
        run(["ip", "netns", "exec", self.ns("tor"), "/usr/lib/frr/bgpd", "-d",
             "-f", str(tor / "bgpd.conf"), "-i", str(tor / "bgpd.pid"),
             "-z", str(tor / "zserv.api"), "--vty_socket", str(tor),
             "-A", "127.0.0.1", "-P", "0", "--log", f"file:{tor}/bgpd.log"])


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


@contextlib.contextmanager
def tor_lab(tmp_path: Path, edit: Callable[[Path], None] | None = None,
            converge: bool = True):
    """Build a private tor lab, yield it as a ``Lab``, and tear it down even on failure.

    ``edit`` may change the copied configs (``tmp_path/configs``) before the lab starts.
    """
    name = f"bgpt{secrets.token_hex(3)}"
    shutil.copytree(REPO / "containerlab", tmp_path / "containerlab")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    path = tmp_path / "containerlab" / "bgpnet-tor.clab.yml"
    data = yaml.safe_load(path.read_text())
    data["name"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if edit is not None:
        edit(tmp_path / "configs")
    lab = Lab(path=path, name=name, configs=tmp_path / "configs")
    try:
        bgpnet("lab", "up", str(path))
        if converge:
            assert poll(lab.converged, CONVERGE_TIMEOUT), "lab did not converge"
        yield lab
    finally:
        bgpnet("lab", "down", str(path), check=False)
        for process in lab.agents.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        for namespace in namespaces():
            if namespace.startswith(f"{name}-"):
                kill_namespace(namespace)
        shutil.rmtree(RUNTIME_ROOT / name, ignore_errors=True)


def edit_yaml(path: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# -- observers that run beside a fault ----------------------------------------------


_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


class Pinger:
    """``ping -i INTERVAL`` from one namespace to an address until ``stop()``."""

    def __init__(self, namespace: str, address: str, interval: float = 0.02) -> None:
        self.label = f"{namespace}->{address}"
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "ping", "-n", "-i", str(interval), "-W", "1",
             address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.sent = 0
        self.received = 0

    def stop(self) -> int:
        """Stop pinging; return the number of lost pings."""
        # ip netns exec execs ping, so SIGINT reaches ping, which prints its summary.
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=10)
        match = _PING_SUMMARY.search(output)
        assert match, f"{self.label}: no ping summary in {output[-300:]!r}"
        self.sent, self.received = int(match.group(1)), int(match.group(2))
        return self.lost

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class RouteWatch:
    """Sample our routes in some namespaces in a thread; count samples missing a route."""

    def __init__(self, expected: dict[str, Iterable[str]], interval: float = 0.02) -> None:
        self.expected = {namespace: set(prefixes) for namespace, prefixes in expected.items()}
        self.interval = interval
        self.samples = 0
        self.missing: list[tuple[float, str, str]] = []  # (time, namespace, prefix)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "RouteWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for namespace, prefixes in self.expected.items():
                present = set(learned(namespace))
                for prefix in sorted(prefixes - present):
                    self.missing.append((now, namespace, prefix))
            self.samples += 1
            self._stop.wait(self.interval)


@contextlib.contextmanager
def pinging(pairs: list[tuple[str, str]], interval: float = 0.02):
    """Run one ``Pinger`` per (namespace, address) for the body; stop them at the end."""
    pingers = [Pinger(namespace, address, interval) for namespace, address in pairs]
    try:
        yield pingers
    finally:
        for pinger in pingers:
            if pinger.process.poll() is None:
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    pinger.stop()
            pinger.kill()


def report(record_property, name: str, value) -> None:
    """Record a measurement in the JUnit XML and print it, for the test output."""
    record_property(name, value)
    print(f"MEASURED {name}={value}")


# -- one agent node and one peer namespace on a veth pair ----------------------------


@dataclass(frozen=True)
class Family:
    """Addresses of a node/peer pair in one family."""

    version: int
    node: str
    peer: str
    peer_extra: str  # a second peer address, a next hop the source may announce
    prefixlen: int
    pod_cidr: str
    cluster_cidr: str

    @property
    def flag(self) -> str:
        return f"-{self.version}"


IPV4 = Family(4, "192.168.50.1", "192.168.50.2", "192.168.50.3", 24,
              "10.244.1.0/24", "10.244.0.0/16")
IPV6 = Family(6, "fd00:50::1", "fd00:50::2", "fd00:50::3", 64,
              "fd00:10:244:1::/64", "fd00:10:244::/48")


@dataclass
class AgentNode:
    """An agent in namespace ``namespace`` peering with one peer in ``peer_namespace``."""

    namespace: str
    peer_namespace: str
    directory: Path
    family: Family
    process: subprocess.Popen | None = None

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def config_path(self) -> Path:
        return self.directory / "agent.yaml"

    @property
    def log_path(self) -> Path:
        return self.directory / "agent.log"

    def write_config(self, peer_asn: int = 64513, hold_time: int = 9, restart_time: int = 120,
                     **extra) -> None:
        family = self.family
        config = {
            "node": {"name": "node", "address": family.node, "asn": 64512,
                     "router_id": "192.168.50.1"},
            "pod_cidr": family.pod_cidr,
            "cluster_cidr": family.cluster_cidr,
            "peers": [{"name": "peer", "address": family.peer, "asn": peer_asn,
                       "hold_time": hold_time}],
            "state_dir": str(self.state_dir),
            "http": {"listen": None},
            "graceful_restart": {"enabled": True, "restart_time": restart_time},
            **extra,
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, argv: list[str] | None = None) -> subprocess.Popen:
        """Start the agent (or ``argv`` followed by the agent's arguments); wait for node.json."""
        (self.state_dir / "node.json").unlink(missing_ok=True)
        command = argv or [str(BIN_DIR / "bgpnet")]
        env = {**os.environ, "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *command, "agent",
                 "--config", str(self.config_path), "--state-dir", str(self.state_dir)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                cwd=REPO, start_new_session=True)
        process = self.process
        assert poll(lambda: (self.state_dir / "node.json").exists() or process.poll() is not None,
                    30.0)
        assert process.poll() is None, f"agent exited: {self.log_tail()}"
        return process

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def log_lines(self, pattern: str) -> list[str]:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return [line for line in text.splitlines() if re.search(pattern, line)]
        return []

    def learned(self) -> dict[str, tuple[str, ...]]:
        return learned(self.namespace, self.family.flag)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def agent_pair(netns: Callable[..., str], directory: Path, family: Family = IPV4) -> AgentNode:
    """Create a node and a peer namespace joined by a veth pair; return the (stopped) node."""
    node = netns("bgpt")
    peer = netns("bgpt")
    veth = f"bgpt{secrets.token_hex(3)}"
    run(["ip", "link", "add", veth, "netns", node, "type", "veth", "peer", "name", "eth0",
         "netns", peer])
    run(["ip", "-n", node, "link", "set", veth, "name", "eth0"])
    nodad = ["nodad"] if family.version == 6 else []
    run(["ip", "-n", node, "addr", "add", f"{family.node}/{family.prefixlen}", "dev", "eth0", *nodad])
    for address in (family.peer, family.peer_extra):
        run(["ip", "-n", peer, "addr", "add", f"{address}/{family.prefixlen}", "dev", "eth0", *nodad])
    for namespace in (node, peer):
        run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
    directory.mkdir(parents=True, exist_ok=True)
    return AgentNode(namespace=node, peer_namespace=peer, directory=directory, family=family)


# -- BGP peers that run in the peer namespace ---------------------------------------


@dataclass
class Bird:
    """BIRD 2 in the peer namespace, exporting static routes to the agent over eBGP."""

    node: AgentNode
    statics: dict[str, tuple[list[str], bool]]  # name -> (prefixes, enabled at start)
    process: subprocess.Popen | None = None

    @property
    def control(self) -> Path:
        return self.node.directory / "bird.ctl"

    def start(self) -> None:
        family = self.node.family
        channel = f"ipv{family.version}"
        lines = ['router id 192.168.50.2;', 'protocol device {}']
        for name, (prefixes, enabled) in self.statics.items():
            lines.append(f"protocol static {name} {{")
            lines.append(f"  {channel};")
            if not enabled:
                lines.append("  disabled;")
            lines += [f"  route {prefix} blackhole;" for prefix in prefixes]
            lines.append("}")
        lines += [
            "protocol bgp agent {",
            f"  local {family.peer} as 64513;",
            f"  neighbor {family.node} as 64512;",
            "  passive on;",
            f"  {channel} {{ import none; export all; }};",
            "}",
        ]
        config = self.node.directory / "bird.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.node.peer_namespace, "bird", "-f", "-c", str(config),
             "-s", str(self.control), "-P", str(self.node.directory / "bird.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        assert poll(self.control.exists, 10.0), "BIRD did not open its control socket"

    def birdc(self, *command: str) -> str:
        return run(["birdc", "-s", str(self.control), *command]).stdout

    def established(self) -> bool:
        return "Established" in self.birdc("show", "protocols", "all", "agent")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class ExaBGPSource:
    """ExaBGP in the peer namespace, sending the API commands of ``commands`` once up.

    ``exabgp_source.py`` is its API program: it writes the commands after the session
    is up and appends every session state message to ``states`` (the peer's own view).
    """

    node: AgentNode
    commands: list[str]
    hold_time: int = 9
    batch: int = 0  # commands written between pauses; 0 writes them all at once
    pause: float = 0.0
    process: subprocess.Popen | None = None

    @property
    def states(self) -> Path:
        return self.node.directory / "source-states.jsonl"

    @property
    def done(self) -> Path:
        return self.node.directory / "source-done"

    def start(self) -> None:
        family = self.node.family
        directory = self.node.directory
        (directory / "source-commands.txt").write_text("".join(f"{line}\n" for line in self.commands))
        program = [sys.executable, str(Path(__file__).with_name("exabgp_source.py")),
                   str(directory / "source-commands.txt"), str(self.states), str(self.done),
                   str(self.batch), str(self.pause)]
        config = directory / "source.conf"
        config.write_text("\n".join([
            "process source {",
            f"    run {' '.join(program)};",
            "    encoder json;",
            "}",
            f"neighbor {family.node} {{",
            "    router-id 192.168.50.2;",
            f"    local-address {family.peer};",
            "    local-as 64513;",
            "    peer-as 64512;",
            f"    hold-time {self.hold_time};",
            "    passive;",
            "    listen 179;",
            f"    family {{ ipv{family.version} unicast; }}",
            "    api { processes [ source ]; neighbor-changes; }",
            "}",
        ]) + "\n")
        env = {**os.environ, "exabgp.daemon.user": "root", "exabgp.api.cli": "false",
               "exabgp.api.ack": "false", "exabgp.tcp.bind": family.peer,
               "exabgp.daemon.daemonize": "false", "exabgp.log.destination": "stdout"}
        with open(directory / "source.log", "ab") as log_file:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.node.peer_namespace, str(BIN_DIR / "exabgp"),
                 "server", str(config)], stdout=log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)

    def state_messages(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return [json.loads(line)["neighbor"]["state"]
                    for line in self.states.read_text().splitlines() if line.strip()]
        return []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def established_connections(namespace: str, port: int = 179) -> set[tuple[str, str]]:
    """Return the (local, peer) address:port pairs of established BGP connections."""
    output = run(["ip", "netns", "exec", namespace, "ss", "-Htn", "state", "established",
                  f"( sport = :{port} or dport = :{port} )"]).stdout
    pairs = set()
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 4:
            pairs.add((words[-2], words[-1]))
    return pairs

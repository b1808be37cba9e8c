"""The route source and the four receivers of the announce/withdraw benchmark.

The source is BIRD 2 in the ``src`` namespace with a ``static`` protocol of N
blackhole routes that starts disabled. ``birdc enable bulk`` makes BIRD send all N
prefixes to the receiver over eBGP (AS 65001 to AS 65002), and ``birdc disable
bulk`` withdraws them.

Receivers, each in the ``rcv`` namespace, each exposing ``held()``: the number of
benchmark routes it holds now.
  bgpnet        ``bgpnet agent`` (which runs ExaBGP); held = prefixes in the FIB
  bird          BIRD 2 with a kernel protocol exporting everything; held = FIB
  frr           FRR zebra + bgpd; held = FIB
  exabgp-alone  ExaBGP with the agent's own rendered config, but with
                ``exabgp_counter.py`` as its API process; held = prefixes
                announced minus withdrawn, as counted by that process
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from bench import fib
from bench.netns import RECEIVER_ADDRESS, SOURCE_ADDRESS, Lab, run
from bgpnet.config import parse
from bgpnet.exabgp import confgen

SOURCE_ASN = 65001
RECEIVER_ASN = 65002
# Benchmark prefixes start at 10.0.0.0 and stay inside CLUSTER_CIDR for up to 100,000
# /24s (10.0.0.0-11.134.159.255). The receiving agent's own pod CIDR sits at the end.
CLUSTER_CIDR = "10.0.0.0/7"
POD_CIDR = "11.255.255.0/24"
FIRST_PREFIX = int(ipaddress.IPv4Address("10.0.0.0"))
ESTABLISH_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def prefixes(count: int, length: int) -> list[str]:
    """Return ``count`` consecutive IPv4 prefixes of ``length`` bits from 10.0.0.0."""
    step = 1 << (32 - length)
    return [f"{ipaddress.IPv4Address(FIRST_PREFIX + index * step)}/{length}"
            for index in range(count)]


class Source:
    """BIRD in the ``src`` namespace with N static routes, announced on request."""

    def __init__(self, lab: Lab, workdir: Path, count: int, length: int) -> None:
        self.lab = lab
        self.dir = workdir / "source"
        self.dir.mkdir(parents=True)
        self.ctl = str(self.dir / "bird.ctl")
        routes = "\n".join(f"    route {p} blackhole;" for p in prefixes(count, length))
        (self.dir / "bird.conf").write_text(f"""
router id {SOURCE_ADDRESS};
protocol device {{ }}
protocol static bulk {{
    disabled;
    ipv4;
{routes}
}}
protocol bgp receiver {{
    local {SOURCE_ADDRESS} as {SOURCE_ASN};
    neighbor {RECEIVER_ADDRESS} as {RECEIVER_ASN};
    connect delay time 1;
    connect retry time 2;
    error wait time 1, 2;
    ipv4 {{ import none; export all; next hop self; }};
}}
""")
        self.process = lab.spawn(lab.src, ["bird", "-f", "-c", str(self.dir / "bird.conf"),
                                           "-s", self.ctl, "-P", str(self.dir / "bird.pid")],
                                 self.dir / "bird.log")

    def birdc(self, *words: str) -> str:
        return run("ip", "netns", "exec", self.lab.src, "birdc", "-s", self.ctl, *words)

    def wait_established(self) -> None:
        deadline = time.monotonic() + ESTABLISH_TIMEOUT
        while time.monotonic() < deadline:
            if os.path.exists(self.ctl):
                out = run("ip", "netns", "exec", self.lab.src, "birdc", "-s", self.ctl,
                          "show", "protocols", "receiver", check=False)
                if "Established" in out:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"BGP session source-receiver not established in {ESTABLISH_TIMEOUT:.0f} s; "
                           f"see {self.dir}/bird.log and the receiver's log")

    def announce(self) -> None:
        self.birdc("enable", "bulk")

    def withdraw(self) -> None:
        self.birdc("disable", "bulk")


class FibReceiver:
    """A receiver whose progress is the number of prefixes added to its FIB."""

    name = ""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True)
        self._fib = lab.fib_path(lab.rcv)
        self._baseline = 0

    def settle(self) -> None:
        """Record the FIB size with no benchmark routes, as the zero of ``held``."""
        self._baseline = fib.count_prefixes(self._fib)

    def held(self) -> int:
        return fib.count_prefixes(self._fib) - self._baseline

    def pids(self) -> list[int]:
        return []


class BirdReceiver(FibReceiver):
    name = "bird"

    def start(self) -> None:
        conf = self.dir / "bird.conf"
        conf.write_text(f"""
router id {RECEIVER_ADDRESS};
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol bgp upstream {{
    local {RECEIVER_ADDRESS} as {RECEIVER_ASN};
    neighbor {SOURCE_ADDRESS} as {SOURCE_ASN};
    ipv4 {{ import all; export none; }};
}}
""")
        self.lab.spawn(self.lab.rcv, ["bird", "-f", "-c", str(conf), "-s", str(self.dir / "bird.ctl"),
                                      "-P", str(self.dir / "bird.pid")], self.dir / "bird.log")


class FrrReceiver(FibReceiver):
    name = "frr"

    def start(self) -> None:
        shutil.chown(self.dir, "frr", "frr")
        os.chmod(self.dir, 0o755)
        (self.dir / "zebra.conf").write_text("hostname receiver\n")
        (self.dir / "bgpd.conf").write_text(f"""hostname receiver
router bgp {RECEIVER_ASN}
 bgp router-id {RECEIVER_ADDRESS}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor {SOURCE_ADDRESS} remote-as {SOURCE_ASN}
 address-family ipv4 unicast
  neighbor {SOURCE_ADDRESS} activate
 exit-address-family
""")
        for name in ("zebra.conf", "bgpd.conf"):
            shutil.chown(self.dir / name, "frr", "frr")
        common = ["-z", str(self.dir / "zserv.api"), "--vty_socket", str(self.dir),
                  "-A", "127.0.0.1", "-P", "0"]
        self.lab.spawn(self.lab.rcv, ["/usr/lib/frr/zebra", "-f", str(self.dir / "zebra.conf"),
                                      "-i", str(self.dir / "zebra.pid"), *common,
                                      "--log", f"file:{self.dir}/zebra.log"], self.dir / "zebra.out")
        _wait_path(self.dir / "zserv.api")
        self.lab.spawn(self.lab.rcv, ["/usr/lib/frr/bgpd", "-f", str(self.dir / "bgpd.conf"),
                                      "-i", str(self.dir / "bgpd.pid"), *common,
                                      "--log", f"file:{self.dir}/bgpd.log"], self.dir / "bgpd.out")


def agent_config(state_dir: Path) -> dict:
    """Return the bgpnet agent config of the receiver, as a YAML document."""
    return {
        "node": {"name": "bench", "address": RECEIVER_ADDRESS, "asn": RECEIVER_ASN},
        "pod_cidr": POD_CIDR,
        "cluster_cidr": CLUSTER_CIDR,
        "bridge": {"name": "v-bench"},
        "peers": [{"name": "source", "address": SOURCE_ADDRESS, "asn": SOURCE_ASN}],
        "http": {"listen": None},
        "state_dir": str(state_dir),
        # No periodic resync inside a measurement.
        "resync_seconds": 3600,
    }


# Extra ``exabgp.*`` environment variables for the bgpnet and ExaBGP-alone receivers,
# set by ``bench.run --exabgp-env`` to try ExaBGP settings the agent does not render.
# The agent passes its own environment on to ExaBGP, below its rendered settings.
EXABGP_ENV: dict[str, str] = {}


class BgpnetReceiver(FibReceiver):
    name = "bgpnet"

    def start(self) -> None:
        state = self.dir / "state"
        config = self.dir / "agent.yaml"
        config.write_text(yaml.safe_dump(agent_config(state)))
        argv = [str(VENV_BIN / "bgpnet"), "--log-level", "WARNING", "agent", "--config",
                str(config), "--state-dir", str(state)]
        self.process = self.lab.spawn(self.lab.rcv, argv, self.dir / "agent.log",
                                      env={**os.environ, **EXABGP_ENV})

    def pids(self) -> list[int]:
        """Return the PIDs of the agent and its descendants (ExaBGP, the relay)."""
        return [self.process.pid, *_descendants(self.process.pid)]


class ExabgpAloneReceiver:
    """ExaBGP with the agent's rendered config, and a counting API process."""

    name = "exabgp-alone"

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True)
        self.counts = self.dir / "counts"

    def start(self) -> None:
        cfg = parse(agent_config(self.dir))
        counter = [sys.executable, str(REPO / "bench" / "exabgp_counter.py"), str(self.counts)]
        conf = self.dir / "exabgp.conf"
        conf.write_text(confgen.render_config(cfg, counter))
        env = {**os.environ, **confgen.render_environment(cfg), **EXABGP_ENV}
        self.lab.spawn(self.lab.rcv, [str(VENV_BIN / "exabgp"), "server", str(conf)],
                       self.dir / "exabgp.log", env=env)

    def settle(self) -> None:
        pass

    def held(self) -> int:
        try:
            announced, withdrawn = map(int, self.counts.read_text().split())
        except (FileNotFoundError, ValueError):
            return 0
        return announced - withdrawn

    def pids(self) -> list[int]:
        return []


RECEIVERS = {cls.name: cls for cls in (BgpnetReceiver, BirdReceiver, FrrReceiver, ExabgpAloneReceiver)}


def _wait_path(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout:.0f} s")
        time.sleep(0.02)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found

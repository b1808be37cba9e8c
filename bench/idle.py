"""Idle CPU of ExaBGP under the agent for several ``exabgp.reactor.speed`` values.

ExaBGP 5.0's reactor waits for I/O with ``poll()`` and a timeout of
``reactor.speed / 100`` seconds (``exabgp/reactor/loop.py``), so with the default
1.0 it wakes 100 times a second even when nothing happens. This benchmark runs one
``bench.netns.Lab`` pair per value, all in parallel. FRR in ``src`` (AS 65001) uses
the lab's route-reflector timers, 3 s keepalive and 9 s hold. ``bgpnet agent`` in
``rcv`` (AS 65002) has ``exabgp.reactor.speed=VALUE`` in its environment, and the
agent passes that on to ExaBGP. Once the session is Established and has settled, it
records the CPU seconds of the agent, ExaBGP and the relay over ``--idle-seconds``,
then watches FRR's view of the session until ``--hold-seconds`` have passed since
Established: the session must stay Established with no drop.

Usage (root): ``.venv/bin/python -m bench.idle --speeds 1.0,5.0,10.0``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from bench import resources
from bench.daemons import VENV_BIN, _descendants, _wait_path, agent_config
from bench.netns import RECEIVER_ADDRESS, SOURCE_ADDRESS, Lab

log = logging.getLogger("bench")

SOURCE_ASN = 65001
ESTABLISH_TIMEOUT = 60.0
SETTLE_SECONDS = 10.0  # after Established: initial UPDATEs, End-of-RIB, relay start-up
RESULTS = Path(__file__).resolve().parent / "results" / "idle.json"


def frr_config() -> str:
    return f"""hostname src
router bgp {SOURCE_ASN}
 bgp router-id {SOURCE_ADDRESS}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor {RECEIVER_ADDRESS} remote-as 65002
 neighbor {RECEIVER_ADDRESS} timers 3 9
 neighbor {RECEIVER_ADDRESS} timers connect 2
 address-family ipv4 unicast
  neighbor {RECEIVER_ADDRESS} activate
 exit-address-family
"""


def start_frr(lab: Lab, directory: Path) -> None:
    directory.mkdir()
    (directory / "zebra.conf").write_text("hostname src\n")
    (directory / "bgpd.conf").write_text(frr_config())
    for path in (directory, *directory.iterdir()):
        shutil.chown(path, "frr", "frr")
    directory.chmod(0o755)
    common = ["-z", str(directory / "zserv.api"), "--vty_socket", str(directory),
              "-A", "127.0.0.1", "-P", "0"]
    lab.spawn(lab.src, ["/usr/lib/frr/zebra", "-f", str(directory / "zebra.conf"),
                        "-i", str(directory / "zebra.pid"), *common,
                        "--log", f"file:{directory}/zebra.log"], directory / "zebra.out")
    _wait_path(directory / "zserv.api")
    lab.spawn(lab.src, ["/usr/lib/frr/bgpd", "-f", str(directory / "bgpd.conf"),
                        "-i", str(directory / "bgpd.pid"), *common,
                        "--log", f"file:{directory}/bgpd.log"], directory / "bgpd.out")
    _wait_path(directory / "bgpd.vty")


def neighbor_state(directory: Path) -> dict:
    """Return FRR's JSON view of the receiver session (empty until bgpd responds)."""
    done = subprocess.run(["vtysh", "--vty_socket", str(directory), "-c",
                           f"show bgp neighbors {RECEIVER_ADDRESS} json"],
                          capture_output=True, text=True)
    try:
        return json.loads(done.stdout).get(RECEIVER_ADDRESS, {})
    except ValueError:
        return {}


def measure_speed(speed: str, idle_seconds: float, hold_seconds: float) -> dict:
    """Run one FRR + agent pair with ``exabgp.reactor.speed=speed``; return its record."""
    with tempfile.TemporaryDirectory(prefix="bgpnet-idle-") as temp, Lab() as lab:
        workdir = Path(temp)
        workdir.chmod(0o755)  # FRR drops to the frr user, which must reach its directory
        frr_dir = workdir / "frr"
        start_frr(lab, frr_dir)

        config = agent_config(workdir / "state")
        config["peers"][0]["asn"] = SOURCE_ASN
        (workdir / "agent.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin')}"}
        if speed != "default":
            env["exabgp.reactor.speed"] = speed
        agent = lab.spawn(lab.rcv, [str(VENV_BIN / "bgpnet"), "--log-level", "WARNING",
                                    "agent", "--config", str(workdir / "agent.yaml"),
                                    "--state-dir", str(workdir / "state")],
                          workdir / "agent.log", env=env)

        deadline = time.monotonic() + ESTABLISH_TIMEOUT
        while neighbor_state(frr_dir).get("bgpState") != "Established":
            if time.monotonic() > deadline:
                raise TimeoutError(f"speed={speed}: session not Established in "
                                   f"{ESTABLISH_TIMEOUT:.0f} s; see {workdir}/agent.log")
            time.sleep(0.2)
        established_at = time.monotonic()
        time.sleep(SETTLE_SECONDS)

        pids = [agent.pid, *_descendants(agent.pid)]
        commands = {pid: resources.command(pid) for pid in pids}
        before = {pid: resources.cpu_seconds(pid) for pid in pids}
        time.sleep(idle_seconds)
        idle = {pid: resources.cpu_seconds(pid) - before[pid] for pid in pids}

        states = set()
        while time.monotonic() - established_at < hold_seconds:
            states.add(neighbor_state(frr_dir).get("bgpState", "?"))
            time.sleep(1.0)
        final = neighbor_state(frr_dir)
        watched = time.monotonic() - established_at

    exabgp = sum(seconds for pid, seconds in idle.items() if "exabgp" in commands[pid]
                 and "relay" not in commands[pid])
    return {
        "speed": speed,
        "idle_seconds": idle_seconds,
        "processes": [{"command": commands[pid], "idle_cpu_seconds": round(idle[pid], 3)}
                      for pid in pids],
        "exabgp_idle_cpu_seconds": round(exabgp, 3),
        "total_idle_cpu_seconds": round(sum(idle.values()), 3),
        "negotiated_hold_ms": final.get("bgpTimerHoldTimeMsecs"),
        "states_seen": sorted(states),
        "final_state": final.get("bgpState"),
        "connections_established": final.get("connectionsEstablished"),
        "connections_dropped": final.get("connectionsDropped"),
        "watched_seconds": round(watched, 1),
        "stayed_up": final.get("bgpState") == "Established"
                     and final.get("connectionsDropped", 0) == 0 and states == {"Established"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", default="default,5.0,10.0",
                        help="comma-separated exabgp.reactor.speed values; 'default' sets none")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="seconds of idle CPU sampled per value (default 60)")
    parser.add_argument("--hold-seconds", type=float, default=120.0,
                        help="seconds after Established that the session must stay up (default 120)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"where to write the JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if os.geteuid() != 0:
        print("bench.idle: needs root (it creates network namespaces)", file=sys.stderr)
        return 2

    speeds = args.speeds.split(",")
    records: dict[str, dict | str] = {}

    def worker(speed: str) -> None:
        try:
            records[speed] = measure_speed(speed, args.idle_seconds, args.hold_seconds)
        except Exception as exc:  # recorded and printed, so one value failing keeps the others
            records[speed] = f"failed: {exc}"

    # The values run side by side: idle work is small, and CPU seconds, not wall time,
    # are the result.
    # NOTE: SIGTERM ends only the main thread; the labs of running workers are then
    # not torn down. Stop this benchmark with Ctrl-C and wait for it to finish.
    threads = [threading.Thread(target=worker, args=(speed,)) for speed in speeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_average_1m": os.getloadavg()[0],
              "runs": [records[speed] for speed in speeds]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for speed in speeds:
        print(speed, json.dumps(records[speed]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

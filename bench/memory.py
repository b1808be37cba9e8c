"""Memory of agent + ExaBGP + relay while they hold N routes, with announce times.

A shorter companion of the full suite's resources probe (``bench/resources.py``):
no idle minute and only the bgpnet receiver, so one setting can be measured in about
a minute. Each prefix count gets a fresh source and receiver, as in
``bench/announce.py``. ``VmRSS`` of every receiver process is recorded after the
session settles and again while all N prefixes are held after the first announce.
The N prefixes are announced and withdrawn ``--repeats`` times, and ``VmHWM`` (peak
RSS) is read at the end.

Usage (root)::

    .venv/bin/python -m bench.memory --counts 10000,100000
    .venv/bin/python -m bench.memory --exabgp-env exabgp.cache.attributes=false
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import daemons, fib
from bench.announce import SETTLE_SECONDS, TIMEOUT_BASE, TIMEOUT_PER_PREFIX
from bench.daemons import VENV_BIN, BgpnetReceiver, Source, agent_config
from bench.netns import Lab
from bench.resources import command

log = logging.getLogger("bench")


class PatchedReceiver(BgpnetReceiver):
    """The bgpnet receiver, with extra lines added to each neighbor of ExaBGP's config.

    The agent renders ExaBGP's config itself, so a wrapper set as ``exabgp.command``
    inserts the lines after each ``neighbor ... {`` line and then runs ExaBGP.
    """

    def __init__(self, lab: Lab, workdir: Path, neighbor_lines: list[str]) -> None:
        super().__init__(lab, workdir)
        self.neighbor_lines = neighbor_lines

    def start(self) -> None:
        wrapper = self.dir / "exabgp-wrapper"
        # Called as ``wrapper server CONFIG``, like exabgp itself.
        wrapper.write_text(f"""#!{sys.executable}
import os, re, sys
path = sys.argv[2]
with open(path) as file:
    text = file.read()
extra = {self.neighbor_lines!r}
text = re.sub(r"(?m)^(neighbor .* \\{{)$", lambda m: m.group(1) + "".join("\\n    " + x for x in extra), text)
with open(path, "w") as file:
    file.write(text)
os.execv({str(VENV_BIN / "exabgp")!r}, [{str(VENV_BIN / "exabgp")!r}, *sys.argv[1:]])
""")
        wrapper.chmod(0o755)
        state = self.dir / "state"
        config = self.dir / "agent.yaml"
        document = agent_config(state)
        document["exabgp"] = {"command": str(wrapper)}
        config.write_text(yaml.safe_dump(document))
        argv = [str(VENV_BIN / "bgpnet"), "--log-level", "WARNING", "agent", "--config",
                str(config), "--state-dir", str(state)]
        self.process = self.lab.spawn(self.lab.rcv, argv, self.dir / "agent.log",
                                      env={**os.environ, **daemons.EXABGP_ENV})


def status_mb(pid: int) -> dict[str, float]:
    """Return ``VmRSS`` and ``VmHWM`` of ``pid`` in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)
    return values


def snapshot(receiver: BgpnetReceiver) -> list[dict]:
    return [{"command": command(pid), **status_mb(pid)} for pid in receiver.pids()]


def measure(count: int, length: int, repeats: int, neighbor_lines: list[str]) -> dict:
    """Return RSS at rest and with ``count`` routes held, and the announce/withdraw times."""
    timeout = TIMEOUT_BASE + TIMEOUT_PER_PREFIX * count
    result: dict = {"prefixes": count, "prefix_length": length, "announce": [], "withdraw": []}
    with tempfile.TemporaryDirectory(prefix="bgpnet-bench-") as temp, Lab() as lab:
        workdir = Path(temp)
        workdir.chmod(0o755)
        source = Source(lab, workdir, count, length)
        if neighbor_lines:
            receiver: BgpnetReceiver = PatchedReceiver(lab, workdir, neighbor_lines)
        else:
            receiver = BgpnetReceiver(lab, workdir)
        receiver.start()
        source.wait_established()
        time.sleep(SETTLE_SECONDS)
        receiver.settle()
        result["idle"] = snapshot(receiver)
        for repeat in range(repeats):
            started = time.monotonic()
            source.announce()
            result["announce"].append(round(fib.wait_for_count(receiver.held, count, timeout) - started, 3))
            if repeat == 0:
                result["held"] = snapshot(receiver)
            started = time.monotonic()
            source.withdraw()
            result["withdraw"].append(round(fib.wait_for_count(receiver.held, 0, timeout) - started, 3))
        result["end"] = snapshot(receiver)
    result["announce_median"] = statistics.median(result["announce"])
    result["withdraw_median"] = statistics.median(result["withdraw"])
    return result


def summary(result: dict) -> str:
    def column(rows: list[dict], key: str) -> str:
        return " ".join(f"{row[key]:.1f}" for row in rows)
    return (f"{result['prefixes']} /{result['prefix_length']}: "
            f"announce {result['announce_median']:.3f} s withdraw {result['withdraw_median']:.3f} s | "
            f"RSS idle [{column(result['idle'], 'VmRSS')}] held [{column(result['held'], 'VmRSS')}] "
            f"peak at end [{column(result['end'], 'VmHWM')}] MB (agent, ExaBGP, relay)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10000,100000",
                        help="comma-separated prefix counts (default 10000,100000)")
    parser.add_argument("--length", type=int, default=32, help="prefix length in bits (default 32)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="announce/withdraw cycles per count (default 3)")
    parser.add_argument("--exabgp-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ExaBGP environment setting, such as "
                             "exabgp.cache.attributes=false (repeatable)")
    parser.add_argument("--neighbor-line", action="append", default=[], metavar="TEXT",
                        help="line to add to each neighbor of ExaBGP's config, such as "
                             "'adj-rib-in false;' (repeatable)")
    parser.add_argument("--output", type=Path, help="also write the JSON results to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if os.geteuid() != 0:
        print("bench.memory: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    for setting in args.exabgp_env:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("exabgp."):
            parser.error(f"--exabgp-env {setting!r}: expected exabgp.SECTION.KEY=VALUE")
        daemons.EXABGP_ENV[key] = value

    results = []
    for count in (int(text) for text in args.counts.split(",")):
        result = measure(count, args.length, args.repeats, args.neighbor_line)
        results.append(result)
        print(summary(result), flush=True)
    record = {"exabgp_env": daemons.EXABGP_ENV, "neighbor_lines": args.neighbor_line, "load_average_1m": os.getloadavg()[0],
              "results": results}
    if args.output:
        args.output.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmark suite, print one table of ratios and write bench/results/latest.json.

Quick mode (the default, a few minutes): 10,000 /24 prefixes, announce and withdraw,
received by bgpnet, BIRD, FRR and ExaBGP alone, plus the kernel floor (the same
routes written without BGP). ``--full`` adds 1,000 and 100,000 prefixes, /32
prefixes, the resources of agent + ExaBGP at 100,000 routes with a minute of idle
CPU, and cluster convergence in the three-node lab.

Every figure is the median of the repetitions; latest.json keeps each repetition.
Needs root. Every namespace and process started here is removed at the end, also
on failure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import signal
import statistics
import sys
from pathlib import Path

from bench import announce, daemons, kernel_floor

log = logging.getLogger("bench")

RECEIVERS = ("bgpnet", "bird", "frr", "exabgp-alone")
FLOORS = ("ip-batch", "route-writer")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def cases(full: bool) -> list[tuple[int, int, int]]:
    """Return (prefix count, prefix length, repetitions) for the mode."""
    if not full:
        return [(10_000, 24, 5)]
    return [(1_000, 24, 5), (10_000, 24, 5), (100_000, 24, 2),
            (1_000, 32, 5), (10_000, 32, 5), (100_000, 32, 2)]


def run_case(count: int, length: int, repeats: int, probe=None,
             receivers: tuple[str, ...] = RECEIVERS) -> tuple[list[dict], dict]:
    """Measure the receivers and the floor for one prefix set; return case records."""
    samples: dict[str, dict[str, list[float]]] = {}
    usage: dict = {}
    for receiver in receivers:
        use_probe = probe if receiver == "bgpnet" else None
        timings = announce.measure(receiver, count, length, repeats, probe=use_probe)
        samples[receiver] = {"announce": timings.announce, "withdraw": timings.withdraw}
        usage = usage or timings.usage
    samples.update(kernel_floor.measure(count, length, repeats))

    records = []
    for action in ("announce", "withdraw"):
        seconds = {name: statistics.median(times[action]) for name, times in samples.items()}
        floor = min(seconds[name] for name in FLOORS)
        seconds["kernel-floor"] = floor
        bgpnet = seconds["bgpnet"]
        records.append({
            "name": f"{action} {count} /{length}",
            "prefixes": count,
            "prefix_length": length,
            "action": action,
            "seconds": seconds,
            "runs": {name: times[action] for name, times in samples.items()},
            "bgpnet_ratio": {name: bgpnet / value for name, value in seconds.items()
                             if name != "bgpnet" and value > 0},
        })
    return records, usage


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with open("/proc/meminfo") as meminfo:
        memory_kb = int(meminfo.readline().split()[1])
    return {"cores": os.cpu_count(), "cpu": model, "memory_gb": round(memory_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            # Other work on the machine skews every figure: record how busy it was.
            "load_average_1m": os.getloadavg()[0]}


def print_table(records: list[dict]) -> None:
    header = (f"{'case':<22}{'bgpnet':>8}{'bird':>8}{'frr':>8}{'exabgp':>8}{'floor':>8}"
              f"{'x bird':>8}{'x frr':>8}{'x exabgp':>9}{'x floor':>8}")
    print(header)
    nan = float("nan")
    for record in records:
        s, r = record["seconds"], record["bgpnet_ratio"]
        print(f"{record['name']:<22}{s['bgpnet']:>8.3f}{s.get('bird', nan):>8.3f}"
              f"{s.get('frr', nan):>8.3f}{s.get('exabgp-alone', nan):>8.3f}"
              f"{s['kernel-floor']:>8.3f}{r.get('bird', nan):>8.2f}{r.get('frr', nan):>8.2f}"
              f"{r.get('exabgp-alone', nan):>9.2f}{r['kernel-floor']:>8.2f}")
    print("seconds are medians; exabgp = ExaBGP alone with a counting API process; "
          "floor = fastest of ip -batch and RouteWriter without BGP")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="add 1,000/100,000 and /32 cases, resources and lab convergence")
    parser.add_argument("--skip-lab", action="store_true",
                        help="in full mode, leave out cluster convergence in the lab")
    parser.add_argument("--exabgp-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ExaBGP environment setting for bgpnet and ExaBGP alone, "
                             "such as exabgp.api.compact=true (repeatable)")
    parser.add_argument("--receivers", default=",".join(RECEIVERS),
                        help="comma-separated receivers to run (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"where to write the JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SIGTERM (from timeout or make) unwinds like Ctrl-C, so every namespace and
    # process started so far is removed by the cleanup code.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if os.geteuid() != 0:
        print("bench: needs root (it creates network namespaces)", file=sys.stderr)
        return 2

    for setting in args.exabgp_env:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("exabgp."):
            parser.error(f"--exabgp-env {setting!r}: expected exabgp.SECTION.KEY=VALUE")
        daemons.EXABGP_ENV[key] = value
    receivers = tuple(args.receivers.split(","))
    unknown = set(receivers) - set(RECEIVERS)
    if unknown or "bgpnet" not in receivers:
        parser.error(f"--receivers {args.receivers!r}: use bgpnet and any of {', '.join(RECEIVERS)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    result: dict = {"date": started.isoformat(timespec="seconds"), "mode": "full" if args.full else "quick",
                    "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
                    "machine": machine(), "exabgp_env": daemons.EXABGP_ENV, "cases": []}
    for count, length, repeats in cases(args.full):
        probe = None
        if args.full and count == 100_000 and length == 32:
            from bench import resources
            probe = resources.probe
        records, usage = run_case(count, length, repeats, probe, receivers)
        result["cases"].extend(records)
        if usage:
            result["resources"] = usage
    if args.full and not args.skip_lab:
        from bench import convergence
        result["convergence"] = convergence.measure()
    result["load_average_1m_at_end"] = os.getloadavg()[0]
    result["seconds_total"] = round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print_table(result["cases"])
    if "resources" in result:
        print("resources:", json.dumps(result["resources"]))
    if "convergence" in result:
        print("convergence:", json.dumps(result["convergence"]))
    print(f"cores={result['machine']['cores']} date={result['date']} written={args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``bgpnet agent`` and ``bgpnet lab``. The only module that exits.

Exit statuses: 0 success, 1 runtime failure, 2 invalid config or usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bgpnet.errors import BgpnetError, ConfigError

EXIT_FAILURE = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"bgpnet: invalid config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BgpnetError as exc:
        print(f"bgpnet: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ExceptionGroup as group:
        # A task of the agent's TaskGroup failed: print each error, not a traceback.
        expected, unexpected = group.split((BgpnetError, OSError))
        if unexpected is not None:
            raise
        assert expected is not None
        for exc in expected.exceptions:
            print(f"bgpnet: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgpnet", description="Pod-network agent with BGP routing.")
    parser.add_argument("--log-level", default=os.environ.get("BGPNET_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="minimum level of log lines (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    agent = commands.add_parser("agent", help="run the node agent in the foreground")
    agent.add_argument("--config", type=Path, default=Path("/etc/bgpnet/agent.yaml"),
                       help="agent config file (default /etc/bgpnet/agent.yaml)")
    agent.add_argument("--state-dir", type=Path, default=None,
                       help="directory for runtime state; overrides state_dir in the config")
    agent.add_argument("--check", action="store_true",
                       help="validate the config, print a one-line summary and exit without touching the host")
    agent.add_argument("--drain", action="store_true",
                       help="tell the running agent of this config to withdraw the pod CIDR, "
                            "remove its routes and exit (for taking the node out of service)")
    agent.set_defaults(handler=_run_agent)

    status = commands.add_parser("status", help="print the running agent's sessions and routes")
    status.add_argument("--url", default="http://127.0.0.1:9180",
                        help="the agent's HTTP API (default http://127.0.0.1:9180)")
    status.add_argument("--json", action="store_true", help="print the raw JSON status")
    status.set_defaults(handler=_show_status)

    from bgpnet.lab import cli as lab_cli

    lab_cli.register(commands)
    return parser


def _run_agent(args: argparse.Namespace) -> int:
    from bgpnet import config

    cfg = config.load_file(args.config)
    if args.state_dir is not None:
        if not args.state_dir.is_absolute():
            raise ConfigError("--state-dir", str(args.state_dir), "is not an absolute path",
                              "pass a path such as /run/bgpnet")
        import dataclasses

        cfg = dataclasses.replace(cfg, state_dir=args.state_dir)
    if args.drain:
        return _drain(cfg.state_dir)
    if args.check:
        print(f"config {args.config} is valid: node={cfg.node.name} pod_cidr={cfg.pod_cidr} "
              f"peers={len(cfg.peers)}")
        if not cfg.peers:
            print("warning: no peers: this node will announce its pod CIDR to nobody and "
                  "learn no routes", file=sys.stderr)
        return 0

    from bgpnet.agent import run

    return run(cfg)


def _drain(state_dir: Path) -> int:
    import signal
    import time

    from bgpnet.agent import running_agent_pid

    pid = running_agent_pid(state_dir)
    if pid is None:
        print(f"bgpnet: no running agent holds {state_dir / 'agent.lock'}; if the agent "
              "runs with --state-dir, pass the same --state-dir here", file=sys.stderr)
        return EXIT_FAILURE
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        print(f"bgpnet: no running agent: process {pid} from {state_dir / 'agent.pid'} is gone",
              file=sys.stderr)
        return EXIT_FAILURE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"agent {pid} drained and stopped")
            return 0
        time.sleep(0.1)
    print(f"bgpnet: agent {pid} did not stop within 30 s after the drain request", file=sys.stderr)
    return EXIT_FAILURE


def _show_status(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    url = args.url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            data = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        print(f"bgpnet: cannot read {url}: {exc}; is the agent running in this network "
              "namespace with http.listen set?", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from bgpnet.api.render import render_status

    print(render_status(data), end="")
    return 0


def _setup_logging(level: str) -> None:
    # Under systemd, journald stamps each line itself.
    if os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

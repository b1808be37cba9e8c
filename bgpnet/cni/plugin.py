"""The ``bgpnet-cni`` executable: a CNI 1.1.0 plugin that attaches pods to the node bridge.

Role: read the ``CNI_*`` environment and the network config on stdin, run the
command, and print the spec's result or error JSON on stdout (exit status 0 on
success, 1 on error). Logs go to stderr.

Theory of operation: a runtime starts the plugin for every pod operation, so its
start-up time is part of every ADD. Python's start-up alone costs about as much as the
reference Go plugins' whole ADD, and importing pyroute2 costs several times more. So
the plugin imports only the standard library and bgpnet's pure modules, validates the
request, and hands it to the agent of its network namespace over the control socket
(``agent_client``). The agent has pyroute2 loaded and runs ``commands.execute``.
Only when no agent listens does the plugin import ``commands`` and run the same
function itself (the direct path), with the node state read from ``<stateDir>/node.json``
(``stateDir`` from the config, default ``/run/bgpnet``). Rejected alternatives: a
plugin that requests only the node state from the agent and does the netlink work itself
still pays for pyroute2, and a plugin without a direct path fails on a node where the
agent is restarting.

Rules: nothing is written to stdout except the one JSON document. VERSION is handled
without config and without the agent. Unexpected exceptions become error 999, so a
runtime always gets the spec's JSON.
"""

from __future__ import annotations

import json
import os
import sys

from bgpnet.cni import agent_client, result
from bgpnet.cni.result import CniError

# typing.TYPE_CHECKING without importing typing, which the fast path does not need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from bgpnet.cni import netconf

DEFAULT_STATE_DIR = "/run/bgpnet"
# Commands the agent runs; VERSION and malformed calls are handled here.
AGENT_COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS")


def main() -> int:
    """Run one plugin call from the process environment and stdin; return the exit status."""
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    status, output = run(os.environ, stdin)
    if output is not None:
        sys.stdout.write(json.dumps(output) + "\n")
        sys.stdout.flush()
    return status


def run(environ, stdin: str) -> tuple[int, dict | None]:
    """Run one plugin call; return the exit status and the JSON object to print, if any.

    The fast path sends the raw environment and config to the agent, which validates
    them itself, so ``netconf`` is imported only for VERSION and the direct path.
    """
    version = result.answer_version(stdin)
    try:
        if environ.get("CNI_COMMAND") in AGENT_COMMANDS:
            reply = agent_client.call({"op": "cni", "env": cni_environment(environ),
                                       "stdin": stdin})
            if reply is not None:
                return _from_reply(reply)
        from bgpnet.cni import netconf

        request = netconf.parse_request(environ, stdin)
        if request.command == "VERSION":
            return 0, result.version_dict()
        return 0, _run_direct(request)
    except CniError as exc:
        return 1, exc.to_dict(version)
    except agent_client.AgentUnavailable as exc:
        return 1, result.error_dict(version, result.TRY_AGAIN_LATER,
                                    "the node agent did not complete the request",
                                    f"{exc}; retry, and check the agent's log")
    except Exception as exc:  # the runtime must always get the spec's error object
        return 1, result.error_dict(version, result.INTERNAL, "bgpnet-cni failed",
                                    f"{type(exc).__name__}: {exc}")


def cni_environment(environ) -> dict[str, str]:
    """Return the ``CNI_*`` variables, which is all of the environment the request uses."""
    return {key: value for key, value in environ.items() if key.startswith("CNI_")}


def _run_direct(request: "netconf.CniRequest") -> dict | None:
    """Run the request in this process, with the node state read from the state directory."""
    import logging
    from pathlib import Path

    from bgpnet import nodestate
    from bgpnet.cni import commands

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s %(message)s")
    state_dir = Path(request.conf.state_dir or DEFAULT_STATE_DIR)
    try:
        state = nodestate.read(state_dir)
    except FileNotFoundError:
        state = None
    except (ValueError, KeyError, TypeError) as exc:
        raise CniError(result.IO_FAILURE, f"node state in {state_dir} is invalid",
                       f"{exc!r}; restart the agent so it writes the file again") from None
    return commands.execute(request, state, state_dir)


def _from_reply(reply: dict) -> tuple[int, dict | None]:
    """Turn the agent's reply into the exit status and output; the agent set cniVersion."""
    if reply.get("ok") is True:
        return 0, reply.get("result")
    error = reply.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return 1, error
    raise agent_client.AgentUnavailable(f"agent sent a reply without result or error: "
                                        f"{str(reply)[:200]}")


if __name__ == "__main__":
    sys.exit(main())

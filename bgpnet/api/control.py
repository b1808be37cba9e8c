"""The agent's control socket: node state and CNI requests for the ``bgpnet-cni`` plugin.

Role: listen on the abstract unix address ``\\0bgpnet-agent`` in the agent's network
namespace (Linux scopes abstract addresses to the namespace, so each node's plugin
reaches its own agent) and reply to each JSON request line with one JSON object.

Requests:
- ``{"op": "node-state"}`` returns ``{"ok": true, "node_state": {...}, "state_dir": "..."}``,
  the content of node.json plus the agent's state directory.
- ``{"op": "cni", "env": {"CNI_COMMAND": ...}, "stdin": "<config>"}`` runs a CNI
  command as the plugin would on its direct path and returns ``{"ok": true, "result":
  {...} or null}`` or ``{"ok": false, "error": {"code": ..., "msg": ..., "details": ...}}``.

Rules:
- Only root may connect: an abstract socket has no file permissions, so the peer's
  uid is read with SO_PEERCRED and others are turned away.
- The request is validated here again (the plugin's validation is not trusted).
- Netlink and lease work runs in worker threads (``asyncio.to_thread``), so the event
  loop keeps reading ExaBGP while pods are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import struct
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, Any

from bgpnet.cni import netconf, result
from bgpnet.cni.agent_client import CONTROL_ADDRESS
from bgpnet.cni.result import CniError
from bgpnet.nodestate import NodeState

if TYPE_CHECKING:
    from bgpnet.agent import Agent

log = logging.getLogger("bgpnet.api.control")

MAX_REQUEST_BYTES = 1 << 20  # a CNI config with a long prevResult stays far below this
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (include/linux/socket.h)
CAP_NET_ADMIN = 12  # include/uapi/linux/capability.h


def node_state(agent: "Agent") -> NodeState:
    """Return the node state that the agent wrote to node.json, from its config."""
    cfg = agent.cfg
    return NodeState(node=agent.node, pod_cidr=cfg.pod_cidr, gateway=cfg.gateway.ip,
                     bridge=cfg.bridge.name, mtu=cfg.bridge.mtu)


async def serve_control(agent: "Agent", ready: asyncio.Event | None = None) -> None:
    """Serve the control socket until cancelled; set ``ready`` once it accepts connections."""
    server = await asyncio.start_unix_server(partial(_serve_client, agent),
                                             path=CONTROL_ADDRESS, limit=MAX_REQUEST_BYTES)
    log.info("control socket listening node=%s address=@%s", agent.node, CONTROL_ADDRESS[1:])
    if ready is not None:
        ready.set()
    async with server:
        try:
            await server.serve_forever()
        finally:
            log.info("control socket closed node=%s", agent.node)


async def _serve_client(agent: "Agent", reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    try:
        pid, uid = _peer_credentials(writer)
        if uid != 0 or not _has_net_admin(pid):
            # Root alone is not enough: root in a container without CAP_NET_ADMIN must
            # not get pods' veths and leases deleted through the agent.
            log.warning("control connection rejected node=%s pid=%s uid=%s", agent.node, pid, uid)
            return
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                reply = _error(result.INVALID_CONFIG,
                               f"control request larger than {MAX_REQUEST_BYTES} bytes",
                               "shorten the network config (prevResult, runtimeConfig)")
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
                return
            if not line:
                return
            reply = await handle_line(agent, line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    except ConnectionError as exc:
        log.warning("control connection failed node=%s error=%s", agent.node, exc)
    finally:
        writer.close()


async def handle_line(agent: "Agent", line: bytes) -> dict[str, Any]:
    """Decode one request line and return the reply object."""
    try:
        request = json.loads(line)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return _error(result.DECODE_FAILED, "control request is not a JSON object")
    op = request.get("op")
    if op == "node-state":
        state = node_state(agent)
        return {"ok": True, "node_state": json.loads(state.to_json()),
                "state_dir": str(agent.cfg.state_dir)}
    if op == "cni":
        return await _run_cni(agent, request)
    return _error(result.INVALID_CONFIG, f"control op {op!r} is unknown",
                  "use node-state or cni")


async def _run_cni(agent: "Agent", request: dict) -> dict[str, Any]:
    env = request.get("env")
    stdin = request.get("stdin")
    if not isinstance(env, dict) or not isinstance(stdin, str):
        return _error(result.DECODE_FAILED, "cni request needs env (object) and stdin (string)")
    env = {str(key): str(value) for key, value in env.items()}
    try:
        cni_request = netconf.parse_request(env, stdin)
        if cni_request.command == "VERSION":
            return {"ok": True, "result": result.version_dict()}
        from bgpnet.cni import commands

        # NOTE: CNI_NETNS is opened in the agent's mount namespace. An agent in a
        # container, or a runtime in another mount namespace, may see another file
        # there. Passing the namespace as a file descriptor would close that gap.
        # The agent also uses its own state_dir, whatever stateDir the config names.
        output = await asyncio.to_thread(commands.execute, cni_request, node_state(agent),
                                         agent.cfg.state_dir)
    except CniError as exc:
        log.warning("cni request failed node=%s command=%s container_id=%s code=%d error=%s",
                    agent.node, env.get("CNI_COMMAND"), env.get("CNI_CONTAINERID", "-"),
                    exc.code, exc)
        return {"ok": False, "error": exc.to_dict(result.answer_version(stdin))}
    except Exception as exc:  # the plugin must get a reply; the agent keeps running
        log.exception("cni request crashed node=%s command=%s container_id=%s",
                      agent.node, env.get("CNI_COMMAND"), env.get("CNI_CONTAINERID", "-"))
        return _error(result.INTERNAL, "agent failed on a CNI request",
                      f"{type(exc).__name__}: {exc}", result.answer_version(stdin))
    return {"ok": True, "result": output}


def _error(code: int, msg: str, details: str = "",
           version: str = result.SUPPORTED_VERSIONS[-1]) -> dict[str, Any]:
    return {"ok": False, "error": result.error_dict(version, code, msg, details)}


def _peer_credentials(writer: asyncio.StreamWriter) -> tuple[int | None, int | None]:
    """Return the connecting process's (pid, uid) from SO_PEERCRED."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None, None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _ = _UCRED.unpack(raw)
    return pid, uid


def _has_net_admin(pid: int | None) -> bool:
    """Return True when process ``pid`` has CAP_NET_ADMIN in its effective set."""
    if pid is None:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return False


def main(argv: list[str] | None = None) -> int:
    """Set up the node as the agent does and serve only the control socket, without BGP.

    For tests and benchmarks of the CNI plugin's fast path. Run it inside the node's
    network namespace; SIGTERM or SIGINT stops it.
    """
    import argparse
    import dataclasses
    from pathlib import Path

    from bgpnet.agent import Agent
    from bgpnet.config import load_file

    parser = argparse.ArgumentParser(
        prog="python -m bgpnet.api.control",
        description="Set up the node bridge and serve the CNI control socket, without BGP.")
    parser.add_argument("--config", required=True, type=Path, help="agent config file")
    parser.add_argument("--state-dir", required=True, type=Path,
                        help="directory for node.json and leases; overrides the config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    cfg = dataclasses.replace(load_file(args.config), state_dir=args.state_dir)
    agent = Agent(cfg)
    agent.setup_node()

    async def serve_until_signal() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        ready = asyncio.Event()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(serve_control(agent, ready))
                await ready.wait()
                agent.write_node_state()

    asyncio.run(serve_until_signal())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run ExaBGP as a supervised child of the agent.

Theory of operation: ``run()`` writes ExaBGP's config, starts ``exabgp server`` in its
own process group (so the relay and any other child go down with it) and reads
ExaBGP's own log output line by line until the process exits. An exit that the agent
did not ask for is an error: it is logged at WARNING and ExaBGP is started again after
an exponential backoff (tenacity), which starts over once ExaBGP has stayed up for
``HEALTHY_SECONDS``. ``stop()`` sends SIGTERM to the group, waits ``STOP_TIMEOUT``
seconds, then sends SIGKILL, and always reaps the child. On SIGTERM ExaBGP closes each
session with a Cease NOTIFICATION, so peers flush our routes at once. For a graceful
restart ``stop(graceful=True)`` sends SIGKILL instead: the sessions end without a
NOTIFICATION, and peers that help with graceful restart keep our routes.

ExaBGP is started with the parent-death signal set to SIGKILL (``PR_SET_PDEATHSIG``), so
an agent killed with SIGKILL takes ExaBGP down with it. An orphaned ExaBGP would keep
its sessions and collide with the next agent's ExaBGP, and the peer would reset both.
Dying by SIGKILL sends no Cease, so peers treat it as a graceful restart.

ExaBGP's log output is drained continuously: a child blocked writing to a full pipe
would stop sending BGP keepalives.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from bgpnet.config import AgentConfig
from bgpnet.errors import ExaBGPError
from bgpnet.exabgp import confgen

log = logging.getLogger("bgpnet.exabgp")

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
HEALTHY_SECONDS = 60.0  # a run this long resets the restart backoff
PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child


class _HealthyExit(Exception):
    """ExaBGP exited after a long healthy run: restart without backoff."""


class Supervisor:
    def __init__(self, cfg: AgentConfig, socket_path: Path) -> None:
        self._cfg = cfg
        self._socket_path = socket_path
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.restarts = 0
        self.started = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    async def run(self) -> None:
        """Keep ExaBGP running until ``stop()``; raise ExaBGPError if it cannot start at all."""
        exabgp = resolve_command(self._cfg.exabgp_command)
        config_file = self._write_config()
        while not self._stopping:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(ExaBGPError),
                    wait=wait_exponential(multiplier=1, min=1, max=30),
                    before_sleep=self._log_restart,
                    reraise=True,
                ):
                    with attempt:
                        await self._run_once(exabgp, config_file)
            except _HealthyExit:
                self.restarts += 1
                log.warning("exabgp restarting node=%s restarts=%d", self._cfg.node.name, self.restarts)

    async def stop(self, graceful: bool = False) -> None:
        """Stop ExaBGP and reap it; ``graceful`` skips the Cease so peers keep our routes."""
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        if graceful:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
            log.info("exabgp stopped without cease node=%s pid=%d", self._cfg.node.name, process.pid)
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("exabgp did not stop in %.0f s, killing node=%s pid=%d",
                        STOP_TIMEOUT, self._cfg.node.name, process.pid)
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("exabgp stopped node=%s pid=%d status=%s", self._cfg.node.name, process.pid,
                 process.returncode)

    def restart(self) -> None:
        """Kill a running ExaBGP; ``run()`` starts it again as after a crash."""
        process = self._process
        if process is not None and process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)

    async def _run_once(self, exabgp: str, config_file: Path) -> None:
        if self._stopping:
            return
        env = {**os.environ, **confgen.render_environment(self._cfg)}
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        try:
            process = await asyncio.create_subprocess_exec(
                exabgp, "server", str(config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise ExaBGPError(f"starting {exabgp} failed: {exc}") from exc
        self._process = process
        log.info("exabgp started node=%s pid=%d config=%s", self._cfg.node.name, process.pid, config_file)
        self.started.set()

        await self._drain_output(process)
        status = await process.wait()
        # The relay and other members of the group may outlive ExaBGP: end them too.
        _signal_group(process.pid, signal.SIGKILL)
        if self._stopping:
            return
        ran = loop.time() - started_at
        if ran >= HEALTHY_SECONDS:
            raise _HealthyExit()
        raise ExaBGPError(f"exabgp exited with status {status} after {ran:.1f} s")

    async def _drain_output(self, process: asyncio.subprocess.Process) -> None:
        """Log ExaBGP's output at DEBUG until it closes the pipe."""
        assert process.stdout is not None
        # Chunks, not lines: a line longer than the stream's limit would raise in readline.
        pending = b""
        while chunk := await process.stdout.read(1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-(1 << 16):]  # an endless line keeps only its last 64 KiB
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    log.debug("exabgp output node=%s: %s", self._cfg.node.name, line)

    def _log_restart(self, state: RetryCallState) -> None:
        self.restarts += 1
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("exabgp restarting in %.1f s node=%s restarts=%d error=%s",
                    delay, self._cfg.node.name, self.restarts, exc)

    def _write_config(self) -> Path:
        relay = [sys.executable, "-m", "bgpnet.exabgp.relay", str(self._socket_path)]
        text = confgen.render_config(self._cfg, relay)
        path = confgen.config_path(self._cfg.state_dir)
        tmp = path.with_suffix(".tmp")
        # 0600: the file may hold TCP MD5 passwords. fchmod, because O_CREAT keeps the
        # mode of a file left by an earlier run.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.rename(tmp, path)
        return path


def resolve_command(command: str) -> str:
    """Find the exabgp executable on PATH, or else next to the running Python."""
    found = shutil.which(command)
    if found:
        return found
    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise ExaBGPError(f"exabgp command {command!r} not found on PATH or in {beside.parent}; "
                      "install exabgp or set exabgp.command in the config")


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this child (ExaBGP, before exec) when the agent dies."""
    # Runs in the forked child, which has only the thread that forked it: the event
    # loop's thread, which lives as long as the agent.
    if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass  # the whole group has exited already

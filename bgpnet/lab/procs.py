"""Processes of the lab: FRR (zebra and bgpd) and the bgpnet agents, started and stopped.

Role: start daemons inside a node's namespace and stop them again. Every start
returns a ``ProcessRecord`` (PID and start time) for the manifest.

Supervision rules:

- callers signal a recorded process only while ``is_alive`` holds, that is while its
  start time still matches the record, so a PID that the kernel has since given to
  another process is left alone;
- ``stop_all`` sends SIGTERM, waits a bounded time (polling, no fixed sleep), then
  sends SIGKILL and waits again;
- a process that is our child is reaped with ``waitpid``. One that is not (because the
  lab CLI that started it has exited) is reaped by init, so a zombie counts as stopped.

FRR runs without frrinit or watchfrr: zebra and bgpd are started with ``-d`` and
their PIDs are read back from their pid files. Their runtime directory must belong
to the ``frr`` user, because the daemons drop privileges before they lock the pid
file. FRR's ``log file`` command fails after that drop, so logs go via ``--log``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bgpnet import nodestate
from bgpnet.errors import LabError
from bgpnet.lab import netns
from bgpnet.lab.manifest import ProcessRecord
from bgpnet.lab.plan import NodePlan

log = logging.getLogger(__name__)

FRR_DIR = Path("/usr/lib/frr")
FRR_USER = "frr"
DAEMON_START_TIMEOUT = 10.0  # seconds for a pid file or socket to appear
AGENT_READY_TIMEOUT = 30.0  # seconds for the agent to write node.json
TERM_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
KILL_TIMEOUT = 2.0
POLL_INTERVAL = 0.05
AGENT_LOG = "agent.log"


def start_time(pid: int) -> int | None:
    """Return field 22 of ``/proc/<pid>/stat`` (start time in clock ticks), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces or ')', so split after its last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[19])


def _state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2]


def _exited(pid: int) -> bool:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass  # not our child: init reaps it
    return _state(pid) in (None, "Z", "X")


def stop_all(targets: list[tuple[int, str]]) -> list[str]:
    """Stop ``(pid, label)`` targets together: TERM, bounded wait, KILL, bounded wait.

    Returns one message per process still running after SIGKILL (normally none).
    """
    running = []
    for pid, label in targets:
        try:
            os.kill(pid, signal.SIGTERM)
            running.append((pid, label))
        except ProcessLookupError:
            _exited(pid)
    running = _wait_all(running, TERM_TIMEOUT)
    for pid, label in running:
        log.warning("process ignored SIGTERM %s pid=%d timeout=%.0fs, sending SIGKILL",
                    label, pid, TERM_TIMEOUT)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    running = _wait_all(running, KILL_TIMEOUT)
    return [f"stop {label} pid={pid} failed: still running {KILL_TIMEOUT:g} s after SIGKILL"
            for pid, label in running]


def _wait_all(targets: list[tuple[int, str]], timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while True:
        targets = [(pid, label) for pid, label in targets if not _exited(pid)]
        if not targets or time.monotonic() > deadline:
            return targets
        time.sleep(POLL_INTERVAL)


def is_alive(record: ProcessRecord) -> bool:
    """Tell whether the recorded process still runs (same PID and same start time)."""
    return start_time(record.pid) == record.start_time and _state(record.pid) not in ("Z", "X")


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _record(node: str, name: str, pid: int) -> ProcessRecord:
    started = start_time(pid)
    if started is None:
        raise LabError(f"start {name} on node {node}: process {pid} exited right after start; "
                       "see its log in the node's runtime directory")
    return ProcessRecord(node=node, name=name, pid=pid, start_time=started)


def _wait_for(path: Path, step: str, timeout: float = DAEMON_START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise LabError(f"{step}: {path} did not appear within {timeout:g} s; "
                           f"see the logs in {path.parent}")
        time.sleep(POLL_INTERVAL)


def _read_pid(path: Path, step: str) -> int:
    _wait_for(path, step)
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while True:
        text = path.read_text().strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            raise LabError(f"{step}: pid file {path} contains {text!r}, not a PID")
        time.sleep(POLL_INTERVAL)


def prepare_frr_dir(node: NodePlan) -> Path:
    """Create the node's FRR runtime directory owned by frr, with the daemon configs."""
    assert node.frr_config is not None
    for program in ("zebra", "bgpd"):
        if not (FRR_DIR / program).exists():
            raise LabError(f"start FRR on node {node.name}: {FRR_DIR / program} not found; "
                           "install the Debian package frr")
    directory = node.runtime_dir
    directory.mkdir(parents=True, exist_ok=True)
    # zebra needs only a hostname; bgpd reads the topology's frr.conf, whose commands
    # are all bgpd's (router bgp ...), so no integrated-config split is needed.
    (directory / "zebra.conf").write_text(f"hostname {node.name}\n")
    shutil.copyfile(node.frr_config, directory / "bgpd.conf")
    for path in (directory, *directory.iterdir()):
        shutil.chown(path, FRR_USER, FRR_USER)
    directory.chmod(0o755)
    return directory


def frr_command(node: NodePlan, daemon: str) -> list[str]:
    """Build the command line that starts ``daemon`` (zebra or bgpd) in the node's namespace."""
    directory = node.runtime_dir
    return ["ip", "netns", "exec", node.namespace, str(FRR_DIR / daemon), "-d",
            "-f", str(directory / f"{daemon}.conf"), "-i", str(directory / f"{daemon}.pid"),
            "-z", str(directory / "zserv.api"), "--vty_socket", str(directory),
            "-A", "127.0.0.1", "-P", "0", "--log", f"file:{directory / daemon}.log"]


def start_frr_daemon(node: NodePlan, daemon: str) -> ProcessRecord:
    """Start zebra or bgpd daemonized; return its record once its pid file is written."""
    step = f"start {daemon} on node {node.name}"
    pid_file = node.runtime_dir / f"{daemon}.pid"
    pid_file.unlink(missing_ok=True)
    netns.run(frr_command(node, daemon), step, timeout=DAEMON_START_TIMEOUT)
    pid = _read_pid(pid_file, step)
    if daemon == "zebra":
        _wait_for(node.runtime_dir / "zserv.api", step)
    else:
        _wait_for(node.runtime_dir / "bgpd.vty", step)
    log.info("process started node=%s process=%s pid=%d", node.name, daemon, pid)
    return _record(node.name, daemon, pid)


def agent_command(node: NodePlan, bin_dir: Path) -> list[str]:
    assert node.agent_config is not None
    return ["ip", "netns", "exec", node.namespace, str(bin_dir / "bgpnet"), "agent",
            "--config", str(node.agent_config), "--state-dir", str(node.runtime_dir)]


def start_agent(node: NodePlan, bin_dir: Path) -> tuple[ProcessRecord, subprocess.Popen]:
    """Start ``bgpnet agent`` in the node's namespace, logging to ``agent.log``."""
    program = bin_dir / "bgpnet"
    if not program.exists():
        raise LabError(f"start agent on node {node.name}: {program} not found; "
                       "install bgpnet into the Python environment that runs the lab")
    node.runtime_dir.mkdir(parents=True, exist_ok=True)
    (node.runtime_dir / nodestate.FILE_NAME).unlink(missing_ok=True)
    # The agent finds exabgp and the relay on PATH: put this environment's bin first.
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
    with open(node.runtime_dir / AGENT_LOG, "ab") as log_file:
        process = subprocess.Popen(agent_command(node, bin_dir), stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    log.info("process started node=%s process=agent pid=%d", node.name, process.pid)
    return _record(node.name, "agent", process.pid), process


def wait_agent_ready(node: NodePlan, process: subprocess.Popen,
                     timeout: float = AGENT_READY_TIMEOUT) -> None:
    """Poll until the agent has written node.json; raise LabError if it exits or times out."""
    path = node.runtime_dir / nodestate.FILE_NAME
    deadline = time.monotonic() + timeout
    while not path.exists():
        status = process.poll()
        if status is not None:
            raise LabError(f"start agent on node {node.name}: agent exited with status {status}; "
                           f"last log lines: {tail(node.runtime_dir / AGENT_LOG)}")
        if time.monotonic() > deadline:
            raise LabError(f"start agent on node {node.name}: {path} not written within "
                           f"{timeout:g} s; see {node.runtime_dir / AGENT_LOG}")
        time.sleep(POLL_INTERVAL)


def tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

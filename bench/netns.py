"""Network namespaces and processes of one benchmark run, and their cleanup.

``Lab`` creates two namespaces joined by a veth pair, ``src`` (192.0.2.1/24) and
``rcv`` (192.0.2.2/24), each with a ``sleep`` process whose ``/proc/PID/net`` shows
that namespace's FIB. Every process a benchmark starts is registered with
``Lab.spawn``. ``Lab.close`` stops those processes (SIGTERM, bounded wait, SIGKILL),
then kills by PID any process still inside one of the namespaces (children that
the registered ones started, such as ExaBGP under the agent), then deletes the
namespaces. Nothing is added to the host's own namespace.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

SOURCE_ADDRESS = "192.0.2.1"
RECEIVER_ADDRESS = "192.0.2.2"
TERM_TIMEOUT = 5.0


def run(*argv: str, check: bool = True) -> str:
    """Run a command and return its stdout; raise with its stderr when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"command failed: {' '.join(argv)}: status {done.returncode}: "
                           f"{done.stderr.strip()}")
    return done.stdout


class Lab:
    """Two namespaces, ``src`` and ``rcv``, and the processes started in them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.src = f"bfib-{tag}-src"
        self.rcv = f"bfib-{tag}-rcv"
        self._processes: list[subprocess.Popen] = []
        self._anchors: dict[str, subprocess.Popen] = {}
        self._created: list[str] = []

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _build(self) -> None:
        for ns in (self.src, self.rcv):
            run("ip", "netns", "add", ns)
            self._created.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", self.src, "link", "add", "veth-rcv", "type", "veth",
            "peer", "name", "veth-src", "netns", self.rcv)
        for ns, dev, address in ((self.src, "veth-rcv", SOURCE_ADDRESS),
                                 (self.rcv, "veth-src", RECEIVER_ADDRESS)):
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            self._anchors[ns] = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "infinity"])

    def fib_path(self, ns: str) -> Path:
        """Return the path of ``fib_triestat`` as seen from namespace ``ns``."""
        return Path(f"/proc/{self._anchors[ns].pid}/net/fib_triestat")

    def spawn(self, ns: str, argv: list[str], log: Path, **kwargs) -> subprocess.Popen:
        """Start ``argv`` in namespace ``ns`` with stdout and stderr to ``log``."""
        with open(log, "ab") as out:
            process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       **kwargs)
        self._processes.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        """Stop one process: SIGTERM, a bounded wait, then SIGKILL; always reap."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(TERM_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self._processes:
            self._processes.remove(process)

    def stop_namespace(self, ns: str) -> None:
        """Kill by PID every process left inside ``ns`` except its anchor."""
        anchor = self._anchors.get(ns)
        for pid in pids_in_netns(ns):
            if anchor is not None and pid == anchor.pid:
                continue
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_TIMEOUT
        while time.monotonic() < deadline:
            left = [pid for pid in pids_in_netns(ns) if anchor is None or pid != anchor.pid]
            if not left:
                return
            time.sleep(0.05)
        for pid in pids_in_netns(ns):
            if anchor is None or pid != anchor.pid:
                _kill(pid, signal.SIGKILL)

    def close(self) -> None:
        for process in list(self._processes):
            self.stop(process)
        for ns in self._created:
            self.stop_namespace(ns)
        for anchor in self._anchors.values():
            anchor.kill()
            anchor.wait()
        for ns in self._created:
            for pid in pids_in_netns(ns):
                _kill(pid, signal.SIGKILL)
            run("ip", "netns", "delete", ns, check=False)
        self._created.clear()
        self._anchors.clear()


def pids_in_netns(ns: str) -> list[int]:
    """Return the PIDs of processes whose network namespace is ``ns``."""
    try:
        target = os.stat(f"/run/netns/{ns}").st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                pids.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass

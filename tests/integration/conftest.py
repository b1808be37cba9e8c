"""Fixtures for integration tests: private network namespaces, removed even on failure.

``netns`` is a factory. Each call creates a namespace named ``<prefix>-<8 hex digits>``
with loopback up and returns its name. At teardown every process still running in a
namespace of the test gets SIGTERM, then SIGKILL after a bounded wait, and the
namespace is deleted. ``enter_netns`` moves the calling thread into a namespace for
the length of a ``with`` block, so in-process code (netlink sockets) runs there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
TERM_WAIT_SECONDS = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its output as text."""
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def namespace_pids(name: str) -> list[int]:
    result = run("ip", "netns", "pids", name, check=False)
    return [int(word) for word in result.stdout.split()]


def _stop_processes(name: str) -> None:
    pids = namespace_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TERM_WAIT_SECONDS
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = namespace_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns failed: {os.strerror(code)}")


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the body of the ``with`` block in network namespace ``name`` (this thread only)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


@pytest.fixture
def netns() -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def create(prefix: str = "bgpt") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        run("ip", "netns", "add", name)
        created.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    yield create

    for name in reversed(created):
        _stop_processes(name)
        result = run("ip", "netns", "delete", name, check=False)
        # Tolerate only a namespace that is already gone. Any other failure leaks it.
        if result.returncode != 0 and os.path.exists(f"/run/netns/{name}"):
            raise RuntimeError(f"netns {name} could not be deleted: {result.stderr.strip()}")


@pytest.fixture
def enter_netns() -> Callable[[str], contextlib.AbstractContextManager[None]]:
    return enter

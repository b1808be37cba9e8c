"""Pod address leases kept on disk, one file per leased address.

Role: hand out addresses of the node's pod CIDR to container interfaces, safely when
several CNI processes run at once, and without any netlink work.

Rules:
- A lease is the file ``<directory>/<address>``. It contains two ``key=value`` lines,
  ``container_id=...`` and ``ifname=...``. The address is in the file name, so two
  containers can never share an address, whatever the files contain.
- Every read-modify-write runs under an exclusive ``flock`` on ``<directory>/.lock``.
  Lease files are also created with ``link(2)`` from a fully written and fsynced
  temporary file. ``link`` fails with EEXIST like ``O_CREAT|O_EXCL`` does, and a crash
  can leave a stray temporary file but never a half-written lease.
- Allocation is round robin: ``<directory>/.last_reserved`` stores the last address
  handed out, and the search starts after it. A pod that crash-loops therefore gets a
  new address each time, and stale conntrack entries or ARP caches for its old address
  do not hit the new pod.
- The network address, the gateway and the last address of the pool (the IPv4
  broadcast address) are never leased. IPv6 has no broadcast, but the last address is
  skipped there too, so both families behave the same.
- Container ids and interface names are validated before they reach a file.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bgpnet.errors import LeaseError, PoolExhausted
from bgpnet.model import Address, Lease, Prefix

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
LAST_RESERVED_FILE = ".last_reserved"

# Runtimes use hex ids or names made of these characters. The set excludes path
# separators and newlines, so an id can never leave the lease directory or add a line.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,253}")
# IFNAMSIZ is 16 including the terminating NUL (include/uapi/linux/if.h).
_IFNAME_MAX = 15


def validate_container_id(container_id: str) -> None:
    """Raise LeaseError unless ``container_id`` is safe to store and log."""
    if not isinstance(container_id, str) or not _CONTAINER_ID.fullmatch(container_id):
        raise LeaseError(
            f"container_id {container_id!r} is invalid: use 1-254 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit")


def validate_ifname(ifname: str) -> None:
    """Raise LeaseError unless ``ifname`` is a valid Linux interface name.

    The rules are the kernel's ``dev_valid_name()`` (net/core/dev.c): 1-15 bytes,
    not "." or "..", and no '/', ':' or whitespace.
    """
    valid = (
        isinstance(ifname, str)
        and 1 <= len(ifname.encode()) <= _IFNAME_MAX
        and ifname not in (".", "..")
        and not any(char in "/:" or char.isspace() for char in ifname)
        and ifname.isprintable()
    )
    if not valid:
        raise LeaseError(
            f"ifname {ifname!r} is invalid: use 1-15 printable characters "
            "without '/', ':' or spaces, other than '.' and '..'")


class LeaseStore:
    """Leases of ``pool`` in ``directory``, in the file layout the module docstring gives."""

    def __init__(self, directory: Path, pool: Prefix, gateway: Address) -> None:
        if gateway not in pool:
            raise LeaseError(f"gateway {gateway} is not inside pool {pool}: "
                             "use an address of the pool, normally its first host")
        if pool.num_addresses < 4:
            raise LeaseError(f"pool {pool} has no address left for pods after the network, "
                             "gateway and last address: use a prefix of /30 (IPv4) or "
                             "/126 (IPv6) or shorter")
        self.directory = Path(directory)
        self.pool = pool
        self.gateway = gateway
        self._first = int(pool.network_address) + 1
        self._last = int(pool.broadcast_address) - 1

    def reserve(self, container_id: str, ifname: str) -> Lease:
        """Reserve an address for ``container_id``/``ifname``.

        Returns the existing lease when this pair already has one. Raises PoolExhausted
        when every address is leased.
        """
        validate_container_id(container_id)
        validate_ifname(ifname)
        with self._locked():
            taken: set[Address] = set()
            for address, owner in self._scan():
                taken.add(address)
                if owner == (container_id, ifname):
                    return self._lease(address, container_id, ifname)

            for address in self._candidates(taken):
                if self._create(address, container_id, ifname):
                    self._remember(address)
                    log.info("lease reserved address=%s container_id=%s ifname=%s",
                             address, container_id, ifname)
                    return self._lease(address, container_id, ifname)
        raise PoolExhausted(f"reserve an address in pool {self.pool} failed: every address "
                            f"is leased ({len(taken)} leases in {self.directory}); "
                            "delete pods or give the node a larger pod CIDR")

    def release(self, container_id: str, ifname: str) -> Lease | None:
        """Delete the lease of ``container_id``/``ifname`` and return it, or None if there was none."""
        validate_container_id(container_id)
        validate_ifname(ifname)
        if not self.directory.is_dir():
            return None
        with self._locked():
            for address, owner in self._scan():
                if owner == (container_id, ifname):
                    os.unlink(self.directory / str(address))
                    _fsync_directory(self.directory)
                    log.info("lease released address=%s container_id=%s ifname=%s",
                             address, container_id, ifname)
                    return self._lease(address, container_id, ifname)
        return None

    def find(self, container_id: str, ifname: str) -> Lease | None:
        """Return the lease of ``container_id``/``ifname``, or None."""
        for lease in self.leases():
            if (lease.container_id, lease.ifname) == (container_id, ifname):
                return lease
        return None

    def leases(self) -> list[Lease]:
        """Return every readable lease, sorted by address."""
        if not self.directory.is_dir():
            return []
        result = [self._lease(address, *owner)
                  for address, owner in self._scan() if owner is not None]
        return sorted(result, key=lambda lease: lease.address)

    # Internal helpers. Their callers hold the lock, except leases(), which only reads
    # files that link() published complete.

    def _lease(self, address: Address, container_id: str, ifname: str) -> Lease:
        interface = ipaddress.ip_interface(f"{address}/{self.pool.prefixlen}")
        return Lease(address=interface, container_id=container_id, ifname=ifname)

    def _scan(self) -> Iterator[tuple[Address, tuple[str, str] | None]]:
        """Yield each leased address with its (container_id, ifname), or None if unreadable."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                try:
                    address = ipaddress.ip_address(entry.name)
                except ValueError:
                    continue  # the lock file, the round-robin file, temporary files
                if address not in self.pool:
                    continue
                yield address, self._read_owner(Path(entry.path))

    def _read_owner(self, path: Path) -> tuple[str, str] | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        container_id = fields.get("container_id")
        ifname = fields.get("ifname")
        if container_id is None or ifname is None:
            # The address stays taken: its file name still blocks it.
            log.warning("lease file unreadable path=%s content=%r", path, text[:80])
            return None
        return container_id, ifname

    def _candidates(self, taken: set[Address]) -> Iterator[Address]:
        """Yield free addresses, starting after the last reserved one and wrapping around."""
        size = self._last - self._first + 1
        start = self._first
        last = self._read_last_reserved()
        if last is not None and self._first <= int(last) <= self._last:
            start = int(last) + 1
        # Each taken address blocks at most one candidate, so len(taken) + 2 steps
        # (the extra one is the gateway) are enough to reach a free one in a pool of
        # any size, an IPv6 /64 included.
        for step in range(min(size, len(taken) + 2)):
            value = self._first + (start - self._first + step) % size
            address = ipaddress.ip_address(value)
            if address == self.gateway or address in taken:
                continue
            yield address

    def _create(self, address: Address, container_id: str, ifname: str) -> bool:
        """Create the lease file atomically; return False if it already exists."""
        content = f"container_id={container_id}\nifname={ifname}\n"
        tmp = _write_temporary(self.directory, content)
        try:
            os.link(tmp, self.directory / str(address))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        _fsync_directory(self.directory)
        return True

    def _read_last_reserved(self) -> Address | None:
        try:
            text = (self.directory / LAST_RESERVED_FILE).read_text(encoding="utf-8").strip()
            return ipaddress.ip_address(text)
        except (FileNotFoundError, ValueError):
            return None

    def _remember(self, address: Address) -> None:
        tmp = _write_temporary(self.directory, f"{address}\n")
        os.rename(tmp, self.directory / LAST_RESERVED_FILE)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _write_temporary(directory: Path, content: str) -> str:
    """Write ``content`` to a new fsynced temporary file in ``directory``; return its path."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Unit tests for the disk lease store (no root, files under tmp_path only)."""

from __future__ import annotations

import ipaddress
import multiprocessing
from pathlib import Path

import pytest

from bgpnet.cni.ipam import LAST_RESERVED_FILE, LeaseStore
from bgpnet.errors import LeaseError, PoolExhausted

POOL = ipaddress.ip_network("10.244.1.0/24")
GATEWAY = ipaddress.ip_address("10.244.1.1")


def make_store(directory: Path, pool: str = "10.244.1.0/24", gateway: str = "10.244.1.1") -> LeaseStore:
    return LeaseStore(directory, ipaddress.ip_network(pool), ipaddress.ip_address(gateway))


def lease_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if not path.name.startswith("."))


def test_reserve_first_address(tmp_path: Path) -> None:
    lease = make_store(tmp_path).reserve("c1", "eth0")
    assert lease.address == ipaddress.ip_interface("10.244.1.2/24")
    assert lease.container_id == "c1"
    assert lease.ifname == "eth0"


def test_reserve_writes_file(tmp_path: Path) -> None:
    make_store(tmp_path).reserve("c1", "eth0")
    assert lease_files(tmp_path) == ["10.244.1.2"]
    assert (tmp_path / "10.244.1.2").read_text() == "container_id=c1\nifname=eth0\n"


def test_reserve_leaves_no_temporary(tmp_path: Path) -> None:
    make_store(tmp_path).reserve("c1", "eth0")
    leftovers = [path.name for path in tmp_path.iterdir() if path.name.startswith(".tmp")]
    assert leftovers == []


def test_reserve_idempotent(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = store.reserve("c1", "eth0")
    second = store.reserve("c1", "eth0")
    assert second == first
    assert lease_files(tmp_path) == ["10.244.1.2"]


def test_reserve_other_ifname(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = store.reserve("c1", "eth0")
    second = store.reserve("c1", "net1")
    assert second.address != first.address


def test_release_returns_lease(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    lease = store.reserve("c1", "eth0")
    assert store.release("c1", "eth0") == lease
    assert lease_files(tmp_path) == []


def test_release_missing(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.release("c1", "eth0") is None


def test_release_missing_directory(tmp_path: Path) -> None:
    store = make_store(tmp_path / "absent")
    assert store.release("c1", "eth0") is None
    assert not (tmp_path / "absent").exists()


def test_release_twice(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.reserve("c1", "eth0")
    store.release("c1", "eth0")
    assert store.release("c1", "eth0") is None


def test_release_keeps_others(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.reserve("c1", "eth0")
    kept = store.reserve("c2", "eth0")
    store.release("c1", "eth0")
    assert store.leases() == [kept]


def test_leases_sorted(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    reserved = [store.reserve(f"c{index}", "eth0") for index in range(3)]
    assert store.leases() == sorted(reserved, key=lambda lease: lease.address)


def test_find_lease(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    lease = store.reserve("c1", "eth0")
    assert store.find("c1", "eth0") == lease
    assert store.find("c2", "eth0") is None


def test_round_robin_after_release(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = store.reserve("c1", "eth0")
    store.release("c1", "eth0")
    again = store.reserve("c1", "eth0")
    assert again.address != first.address
    assert str(again.address.ip) == "10.244.1.3"


def test_round_robin_state_file(tmp_path: Path) -> None:
    make_store(tmp_path).reserve("c1", "eth0")
    assert (tmp_path / LAST_RESERVED_FILE).read_text() == "10.244.1.2\n"


def test_round_robin_wraps(tmp_path: Path) -> None:
    # /29: network .0, gateway .1, pod addresses .2-.6, last address .7
    store = make_store(tmp_path, "10.0.0.0/29", "10.0.0.1")
    store.reserve("a", "eth0")
    store.reserve("b", "eth0")
    (tmp_path / LAST_RESERVED_FILE).write_text("10.0.0.6\n")
    store.release("a", "eth0")
    assert str(store.reserve("c", "eth0").address.ip) == "10.0.0.2"


def test_last_reserved_garbage(tmp_path: Path) -> None:
    (tmp_path / LAST_RESERVED_FILE).write_text("not an address\n")
    lease = make_store(tmp_path).reserve("c1", "eth0")
    assert str(lease.address.ip) == "10.244.1.2"


SKIPPED = [
    # label, pool, gateway, addresses a full pool must not contain
    ("ipv4 /29 gateway first", "10.0.0.0/29", "10.0.0.1", {"10.0.0.0", "10.0.0.1", "10.0.0.7"}),
    ("ipv4 /29 gateway middle", "10.0.0.0/29", "10.0.0.4", {"10.0.0.0", "10.0.0.4", "10.0.0.7"}),
    ("ipv6 /125", "fd00::/125", "fd00::1", {"fd00::", "fd00::1", "fd00::7"}),
]


@pytest.mark.parametrize("pool,gateway,skipped", [case[1:] for case in SKIPPED],
                         ids=[case[0] for case in SKIPPED])
def test_full_pool_skips(tmp_path: Path, pool: str, gateway: str, skipped: set[str]) -> None:
    store = make_store(tmp_path, pool, gateway)
    leased = set()
    with pytest.raises(PoolExhausted):
        for index in range(16):
            leased.add(str(store.reserve(f"c{index}", "eth0").address.ip))
    assert len(leased) == 5
    assert leased.isdisjoint(skipped)


def test_exhausted_names_pool(tmp_path: Path) -> None:
    store = make_store(tmp_path, "10.0.0.0/30", "10.0.0.1")
    store.reserve("a", "eth0")
    with pytest.raises(PoolExhausted, match="10.0.0.0/30"):
        store.reserve("b", "eth0")


def test_exhausted_then_release(tmp_path: Path) -> None:
    store = make_store(tmp_path, "10.0.0.0/30", "10.0.0.1")
    store.reserve("a", "eth0")
    store.release("a", "eth0")
    assert str(store.reserve("b", "eth0").address.ip) == "10.0.0.2"


def test_ipv6_prefix_length(tmp_path: Path) -> None:
    lease = make_store(tmp_path, "fd00:10:244:1::/64", "fd00:10:244:1::1").reserve("c1", "eth0")
    assert lease.address == ipaddress.ip_interface("fd00:10:244:1::2/64")


def test_unreadable_file_blocks(tmp_path: Path) -> None:
    (tmp_path / "10.244.1.2").write_text("garbage\n")
    store = make_store(tmp_path)
    lease = store.reserve("c1", "eth0")
    assert str(lease.address.ip) == "10.244.1.3"
    assert store.leases() == [lease]


def test_foreign_files_ignored(tmp_path: Path) -> None:
    (tmp_path / "10.9.9.9").write_text("container_id=x\nifname=eth0\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    assert make_store(tmp_path).leases() == []


BAD_CONTAINER_IDS = [
    ("empty", ""),
    ("parent traversal", "../x"),
    ("slash", "a/b"),
    ("leading dot", ".hidden"),
    ("newline", "abc\n"),
    ("embedded newline", "a\nifname=x"),
    ("space", "a b"),
    ("too long", "a" * 255),
    ("not a string", None),
]


@pytest.mark.parametrize("container_id", [case[1] for case in BAD_CONTAINER_IDS],
                         ids=[case[0] for case in BAD_CONTAINER_IDS])
def test_bad_container_id(tmp_path: Path, container_id: str) -> None:
    store = make_store(tmp_path)
    with pytest.raises(LeaseError, match="container_id"):
        store.reserve(container_id, "eth0")
    assert lease_files(tmp_path) == []


BAD_IFNAMES = [
    ("empty", ""),
    ("dot", "."),
    ("dot dot", ".."),
    ("parent traversal", "../x"),
    ("slash", "a/b"),
    ("colon", "eth0:1"),
    ("space", "eth 0"),
    ("newline", "eth0\n"),
    ("sixteen bytes", "a" * 16),
]


@pytest.mark.parametrize("ifname", [case[1] for case in BAD_IFNAMES],
                         ids=[case[0] for case in BAD_IFNAMES])
def test_bad_ifname(tmp_path: Path, ifname: str) -> None:
    store = make_store(tmp_path)
    with pytest.raises(LeaseError, match="ifname"):
        store.reserve("c1", ifname)
    assert lease_files(tmp_path) == []


def test_bad_id_on_release(tmp_path: Path) -> None:
    with pytest.raises(LeaseError, match="container_id"):
        make_store(tmp_path).release("../x", "eth0")


GOOD_IDS = [
    ("sha256 hex", "a" * 64),
    ("max length", "a" * 254),
    ("dots dashes", "pod-1.web_0"),
]


@pytest.mark.parametrize("container_id", [case[1] for case in GOOD_IDS],
                         ids=[case[0] for case in GOOD_IDS])
def test_good_container_id(tmp_path: Path, container_id: str) -> None:
    lease = make_store(tmp_path).reserve(container_id, "eth0")
    assert lease.container_id == container_id


def test_gateway_outside_pool(tmp_path: Path) -> None:
    with pytest.raises(LeaseError, match="gateway"):
        make_store(tmp_path, "10.244.1.0/24", "10.244.2.1")


def test_pool_too_small(tmp_path: Path) -> None:
    with pytest.raises(LeaseError, match="10.0.0.0/31"):
        make_store(tmp_path, "10.0.0.0/31", "10.0.0.1")


def _reserve_in_child(directory: str, container_id: str) -> str:
    store = make_store(Path(directory))
    return str(store.reserve(container_id, "eth0").address.ip)


def test_parallel_reserves(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(processes=50) as pool:
        addresses = pool.starmap(_reserve_in_child,
                                 [(str(tmp_path), f"c{index}") for index in range(50)])
    assert len(set(addresses)) == 50
    assert len(lease_files(tmp_path)) == 50
    assert str(GATEWAY) not in addresses

"""RIB rules: replace, withdraw, session down, own routes, policy, best path."""

from __future__ import annotations

import logging
from ipaddress import ip_address, ip_network

import pytest

from bgpnet.bgp import rib as rib_module
from bgpnet.bgp.policy import ImportPolicy
from bgpnet.bgp.rib import Rib
from bgpnet.model import (
    Ack,
    Announce,
    EndOfRib,
    KernelRoute,
    Malformed,
    Notification,
    PeerId,
    PeerState,
    Withdraw,
)

ROUTER_ID = ip_address("192.168.77.11")
RR = PeerId(ip_address("192.168.77.1"))
N2 = PeerId(ip_address("192.168.77.12"))
N3 = PeerId(ip_address("192.168.77.13"))
P2 = ip_network("10.244.2.0/24")
P3 = ip_network("10.244.3.0/24")
P6 = ip_network("fd00:244:2::/64")
NH2 = ip_address("192.168.77.12")
NH3 = ip_address("192.168.77.13")
OUTSIDE = ip_network("10.99.0.0/24")

POLICY = ImportPolicy(
    cluster_cidrs=(ip_network("10.244.0.0/16"), ip_network("fd00:244::/32")),
    own_prefixes=(ip_network("10.244.1.0/24"),),
    local_addresses=frozenset({ROUTER_ID}),
)


def _rib() -> Rib:
    return Rib(POLICY, node="n1", router_id=ROUTER_ID)


def _announce(peer, nexthop, *prefixes, as_path=(), originator=None) -> Announce:
    return Announce(peer=peer, nexthop=nexthop, prefixes=prefixes,
                    originator_id=originator, as_path=as_path)


def _rejections(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "route rejected" in r.getMessage()]


def test_announce_adds_route():
    rib = _rib()
    changed = rib.apply(_announce(N2, NH2, P2, P3))
    assert changed == {P2, P3}
    assert rib.desired_route(P2) == KernelRoute(P2, (NH2,))


def test_announce_ipv6_route():
    rib = _rib()
    nexthop = ip_address("fd77::12")
    rib.apply(_announce(N2, nexthop, P6))
    assert rib.desired_route(P6) == KernelRoute(P6, (nexthop,))


def test_repeat_announce_unchanged():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    assert rib.apply(_announce(N2, NH2, P2)) == set()


def test_announce_replaces_path():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    changed = rib.apply(_announce(N2, NH3, P2))
    assert changed == {P2}
    assert rib.desired_route(P2) == KernelRoute(P2, (NH3,))
    assert rib.routes_from(N2) == 1


def test_withdraw_removes_route():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2, P3))
    changed = rib.apply(Withdraw(N2, (P2,)))
    assert changed == {P2}
    assert rib.desired_route(P2) is None
    assert rib.desired() == {P3: KernelRoute(P3, (NH2,))}


def test_withdraw_unknown_prefix():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    assert rib.apply(Withdraw(N2, (P3,))) == set()


def test_withdraw_other_peer_path():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    assert rib.apply(Withdraw(N3, (P2,))) == set()
    assert rib.desired_route(P2) == KernelRoute(P2, (NH2,))


def test_peer_down_drops_routes():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2, P3))
    rib.apply(_announce(N3, NH3, P3))
    changed = rib.apply(PeerState(N2, "down", "notification received (6,2)"))
    assert changed == {P2, P3}
    assert rib.desired() == {P3: KernelRoute(P3, (NH3,))}
    assert rib.routes_from(N2) == 0
    assert rib.peers_with_routes() == [N3]


@pytest.mark.parametrize("state", ["connected", "up"])
def test_peer_up_keeps_routes(state):
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    assert rib.apply(PeerState(N2, state)) == set()
    assert rib.routes_from(N2) == 1


def test_own_reflected_route_ignored(caplog):
    caplog.set_level(logging.INFO)
    rib = _rib()
    changed = rib.apply(_announce(RR, ROUTER_ID, ip_network("10.244.1.0/24"),
                                  originator=ROUTER_ID))
    assert changed == set()
    assert rib.reflected_own == 1
    assert rib.desired() == {}
    assert dict(rib.rejected) == {}
    assert _rejections(caplog) == []


def test_own_reflected_replaces_path():
    rib = _rib()
    rib.apply(_announce(RR, NH2, P2, originator=NH2))
    changed = rib.apply(_announce(RR, NH2, P2, originator=ROUTER_ID))
    assert changed == {P2}
    assert rib.desired_route(P2) is None


def test_rejected_not_stored():
    rib = _rib()
    changed = rib.apply(_announce(N2, NH2, OUTSIDE))
    assert changed == set()
    assert rib.desired() == {}
    assert rib.routes_from(N2) == 0
    assert rib.rejected["outside-cluster-cidr"] == 1


def test_rejected_logged_once(caplog):
    caplog.set_level(logging.INFO)
    rib = _rib()
    for _ in range(3):
        rib.apply(_announce(N2, NH2, OUTSIDE))
    assert rib.rejected["outside-cluster-cidr"] == 3
    assert _rejections(caplog) == [
        "route rejected node=n1 peer=192.168.77.12 prefix=10.99.0.0/24 "
        "nexthop=192.168.77.12 reason=outside-cluster-cidr"]


def test_rejected_logged_per_peer(caplog):
    caplog.set_level(logging.INFO)
    rib = _rib()
    rib.apply(_announce(N2, NH2, OUTSIDE))
    rib.apply(_announce(N3, NH3, OUTSIDE))
    assert len(_rejections(caplog)) == 2


def test_rejection_log_capped(caplog, monkeypatch):
    monkeypatch.setattr(rib_module, "MAX_LOGGED_REJECTIONS", 2)
    caplog.set_level(logging.INFO)
    rib = _rib()
    outside = [ip_network(f"10.99.{i}.0/24") for i in range(5)]
    rib.apply(_announce(N2, NH2, *outside))
    messages = [r.getMessage() for r in caplog.records]
    assert len(_rejections(caplog)) == 2
    assert sum("no longer logged" in m for m in messages) == 1
    assert rib.rejected["outside-cluster-cidr"] == 5


def test_rejected_nexthop_counted():
    rib = _rib()
    rib.apply(_announce(N2, ip_address("127.0.0.1"), P2, P3))
    assert rib.rejected["nexthop-martian"] == 2
    assert rib.desired() == {}


def test_rejected_then_accepted():
    rib = _rib()
    rib.apply(_announce(N2, ip_address("127.0.0.1"), P2))
    changed = rib.apply(_announce(N2, NH2, P2))
    assert changed == {P2}
    assert rib.desired_route(P2) == KernelRoute(P2, (NH2,))


def test_accepted_then_rejected():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    changed = rib.apply(_announce(N2, ip_address("127.0.0.1"), P2))
    assert changed == {P2}
    assert rib.desired_route(P2) is None
    assert rib.routes_from(N2) == 0


def test_mixed_update_partly_rejected():
    rib = _rib()
    changed = rib.apply(_announce(N2, NH2, P2, OUTSIDE, ip_network("10.244.1.0/24")))
    assert changed == {P2}
    assert rib.rejected["outside-cluster-cidr"] == 1
    assert rib.rejected["own-pod-cidr"] == 1


def test_shortest_as_path_wins():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2, as_path=(65001, 65002)))
    changed = rib.apply(_announce(N3, NH3, P2, as_path=(65003,)))
    assert changed == {P2}
    assert rib.desired_route(P2) == KernelRoute(P2, (NH3,))


def test_longer_path_not_used():
    rib = _rib()
    rib.apply(_announce(N3, NH3, P2, as_path=(65003,)))
    changed = rib.apply(_announce(N2, NH2, P2, as_path=(65001, 65002)))
    assert changed == set()
    assert rib.desired_route(P2) == KernelRoute(P2, (NH3,))


def test_equal_paths_ecmp():
    rib = _rib()
    rib.apply(_announce(N3, NH3, P2, as_path=(65003,)))
    rib.apply(_announce(N2, NH2, P2, as_path=(65001,)))
    assert rib.desired_route(P2) == KernelRoute(P2, (NH2, NH3))


def test_ecmp_order_independent():
    first, second = _rib(), _rib()
    a = _announce(N2, NH2, P2, as_path=(65001,))
    b = _announce(N3, NH3, P2, as_path=(65003,))
    first.apply(a)
    first.apply(b)
    second.apply(b)
    second.apply(a)
    assert first.desired() == second.desired()
    assert first.desired_route(P2).nexthops == (NH2, NH3)


def test_ecmp_same_nexthop_once():
    rib = _rib()
    rib.apply(_announce(RR, NH2, P2))
    rib.apply(_announce(N2, NH2, P2))
    assert rib.desired_route(P2).nexthops == (NH2,)


def test_withdraw_best_falls_back():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2, as_path=(65001, 65002)))
    rib.apply(_announce(N3, NH3, P2, as_path=(65003,)))
    changed = rib.apply(Withdraw(N3, (P2,)))
    assert changed == {P2}
    assert rib.desired_route(P2) == KernelRoute(P2, (NH2,))


def test_peers_with_routes():
    rib = _rib()
    rib.apply(_announce(N3, NH3, P2))
    rib.apply(_announce(N2, NH2, P3))
    rib.apply(_announce(RR, NH2, OUTSIDE))
    assert rib.peers_with_routes() == [N2, N3]
    assert rib.routes_from(RR) == 0


def test_eor_seen():
    rib = _rib()
    assert rib.apply(EndOfRib(N2, "ipv4", "unicast")) == set()
    assert rib.eor_seen(N2, "ipv4")
    assert not rib.eor_seen(N2, "ipv6")
    assert not rib.eor_seen(N3, "ipv4")


def test_eor_reset_on_down():
    rib = _rib()
    rib.apply(EndOfRib(N2, "ipv4", "unicast"))
    rib.apply(EndOfRib(N3, "ipv4", "unicast"))
    rib.apply(PeerState(N2, "down", "closing connection"))
    assert not rib.eor_seen(N2, "ipv4")
    assert rib.eor_seen(N3, "ipv4")


@pytest.mark.parametrize("event", [
    Ack(True, "done"), Malformed("not JSON", "x"), Notification(N2, 6, 2)],
    ids=["ack", "malformed", "notification"])
def test_other_events_no_change(event):
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    assert rib.apply(event) == set()
    assert rib.routes_from(N2) == 1


def test_desired_is_copy():
    rib = _rib()
    rib.apply(_announce(N2, NH2, P2))
    rib.desired().clear()
    assert rib.desired_route(P2) is not None


def test_update_touches_only_named():
    rib = _rib()
    bulk = [ip_network(f"10.244.{i}.{j}/32") for i in range(2, 42) for j in range(0, 250)]
    rib.apply(_announce(N2, NH2, *bulk))
    changed = rib.apply(_announce(N3, NH3, P2, P3))
    assert changed == {P2, P3}
    assert len(rib.desired()) == len(bulk) + 2


def test_stale_routes_kept():
    rib = _rib()
    rib.apply(_announce(RR, NH2, P2, P3))
    assert rib.mark_stale(RR) == 2
    assert rib.desired_route(P2) == KernelRoute(P2, (NH2,))
    assert rib.desired_route(P3) == KernelRoute(P3, (NH2,))


def test_stale_flush_removes_unrefreshed():
    rib = _rib()
    rib.apply(_announce(RR, NH2, P2, P3))
    rib.mark_stale(RR)
    rib.apply(_announce(RR, NH2, P2))
    assert rib.flush_stale(RR) == {P3}
    assert rib.desired_route(P3) is None
    assert rib.desired_route(P2) == KernelRoute(P2, (NH2,))


def test_stale_withdraw_not_flushed_twice():
    rib = _rib()
    rib.apply(_announce(RR, NH2, P2, P3))
    rib.mark_stale(RR)
    rib.apply(Withdraw(RR, (P3,)))
    assert rib.stale_count(RR) == 1
    assert rib.flush_stale(RR) == {P2}


def test_stale_dropped_on_session_down():
    rib = _rib()
    rib.apply(_announce(RR, NH2, P2))
    rib.mark_stale(RR)
    assert rib.apply(PeerState(RR, "down")) == {P2}
    assert rib.stale_count(RR) == 0


def test_mark_stale_clears_eor():
    rib = _rib()
    rib.apply(EndOfRib(RR, "ipv4", "unicast"))
    rib.mark_stale(RR)
    assert not rib.eor_seen(RR, "ipv4")

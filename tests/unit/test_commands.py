"""ExaBGP API command text, checked against the syntax ExaBGP 5.0.15 accepted."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from bgpnet.bgp import commands
from bgpnet.bgp.commands import announce_route, withdraw_route

RECORD_SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "exabgp" / "record.sh"

CASES = [
    ("announce ipv4 self", announce_route(ip_network("10.244.1.0/24")),
     "announce route 10.244.1.0/24 next-hop self\n"),
    ("announce ipv6 self", announce_route(ip_network("fd00:244:1::/64")),
     "announce route fd00:244:1::/64 next-hop self\n"),
    ("announce ipv4 address", announce_route(ip_network("10.244.1.0/24"),
                                             ip_address("192.168.77.11")),
     "announce route 10.244.1.0/24 next-hop 192.168.77.11\n"),
    ("announce ipv6 address", announce_route(ip_network("fd00:244:1::/64"),
                                             ip_address("fd77::11")),
     "announce route fd00:244:1::/64 next-hop fd77::11\n"),
    ("withdraw ipv4", withdraw_route(ip_network("10.244.1.0/24")),
     "withdraw route 10.244.1.0/24\n"),
    ("withdraw ipv6", withdraw_route(ip_network("fd00:244:1::/64")),
     "withdraw route fd00:244:1::/64\n"),
]


@pytest.mark.parametrize("label,line,expected", CASES, ids=[c[0] for c in CASES])
def test_command_text(label, line, expected):
    assert line == expected


@pytest.mark.parametrize("label,line,expected", CASES, ids=[c[0] for c in CASES])
def test_syntax_recorded(label, line, expected):
    # The recording script sent each of these lines to ExaBGP 5.0.15 and waited
    # for its "done" before going on.
    assert f"send_command '{line.rstrip()}'" in RECORD_SCRIPT.read_text()


BAD = [
    ("prefix text", lambda: announce_route("10.244.1.0/24"), TypeError),
    ("prefix address", lambda: announce_route(ip_address("10.244.1.1")), TypeError),
    ("withdraw prefix text", lambda: withdraw_route("10.244.1.0/24"), TypeError),
    ("withdraw none", lambda: withdraw_route(None), TypeError),
    ("nexthop text", lambda: announce_route(ip_network("10.244.1.0/24"), "192.168.77.11"),
     TypeError),
    ("nexthop family", lambda: announce_route(ip_network("10.244.1.0/24"),
                                              ip_address("fd77::11")), ValueError),
    ("nexthop unspecified", lambda: announce_route(ip_network("10.244.1.0/24"),
                                                   ip_address("0.0.0.0")), ValueError),
    ("nexthop multicast", lambda: announce_route(ip_network("fd00:244:1::/64"),
                                                 ip_address("ff02::1")), ValueError),
]


@pytest.mark.parametrize("label,call,error", BAD, ids=[b[0] for b in BAD])
def test_invalid_input(label, call, error):
    with pytest.raises(error):
        call()


def test_error_names_value():
    with pytest.raises(ValueError, match="fd77::11"):
        announce_route(ip_network("10.244.1.0/24"), ip_address("fd77::11"))


def test_probe_is_comment():
    line = commands.probe()
    assert line.startswith("#")
    assert line.endswith("\n")

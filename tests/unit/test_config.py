"""Config validation: one table row per bad value, each with the message it must produce."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest

from bgpnet import config
from bgpnet.errors import ConfigError

VALID = {
    "node": {"name": "node01", "address": "192.168.1.11", "asn": 64512},
    "pod_cidr": "10.244.1.0/24",
    "cluster_cidr": "10.244.0.0/16",
    "bridge": {"name": "v-net-0", "mtu": 1500},
    "peers": [{"name": "tor", "address": "192.168.1.1", "asn": 64512}],
}


def with_change(path: str, value: object) -> dict:
    """Return VALID with the dotted ``path`` set to ``value`` (a missing marker deletes it)."""
    doc = copy.deepcopy(VALID)
    keys = path.split(".")
    target = doc
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if value is MISSING:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


MISSING = object()

BAD = [
    # (label, path, value, field named in the error, words the message must contain)
    ("node name upper case", "node.name", "Node01", "node.name", "not a valid node name"),
    ("node name missing", "node.name", MISSING, "node.name", "is missing"),
    ("node address not ip", "node.address", "node01.local", "node.address", "not an IP address"),
    ("node address with length", "node.address", "192.168.1.11/24", "node.address", "without a prefix length"),
    ("node address loopback", "node.address", "127.0.0.1", "node.address", "loopback"),
    ("node address unspecified", "node.address", "0.0.0.0", "node.address", "unspecified"),
    ("asn zero", "node.asn", 0, "node.asn", "out of range"),
    ("asn too large", "node.asn", 4294967295, "node.asn", "out of range"),
    ("asn quoted", "node.asn", "64512", "node.asn", "not an AS number"),
    ("asn asdot", "node.asn", "1.10", "node.asn", "not an AS number"),
    ("asn boolean", "node.asn", True, "node.asn", "not an AS number"),
    ("asn as_trans", "node.asn", 23456, "node.asn", "AS_TRANS"),
    ("node address in cluster", "node.address", "10.244.1.1", "node.address", "inside cluster_cidr"),
    ("peer family mismatch", "peers.0.address", "fd00::1", "peers[0].address", "node.address is IPv4"),
    ("pod cidr host bits", "pod_cidr", "10.244.1.5/24", "pod_cidr", "host bits set"),
    ("pod cidr no length", "pod_cidr", "10.244.1.0", "pod_cidr", "not a CIDR"),
    ("pod cidr garbage", "pod_cidr", "10.244.300.0/24", "pod_cidr", "not a CIDR"),
    ("pod cidr outside cluster", "pod_cidr", "10.245.1.0/24", "pod_cidr", "not inside cluster_cidr"),
    ("pod cidr equals cluster", "pod_cidr", "10.244.0.0/16", "pod_cidr", "covers the whole"),
    ("pod cidr too small", "pod_cidr", "10.244.1.0/31", "pod_cidr", "leaves no address"),
    ("pod cidr wrong family", "pod_cidr", "fd00::/64", "pod_cidr", "not the same family"),
    ("cluster cidr default", "cluster_cidr", "0.0.0.0/0", "cluster_cidr", "default route"),
    ("cluster cidr missing", "cluster_cidr", MISSING, "cluster_cidr", "is missing"),
    ("bridge name too long", "bridge.name", "a-very-long-bridge", "bridge.name", "not a valid interface name"),
    ("bridge name slash", "bridge.name", "br/0", "bridge.name", "not a valid interface name"),
    ("bridge mtu small", "bridge.mtu", 10, "bridge.mtu", "out of range"),
    ("bridge unknown key", "bridge.stp", True, "bridge.stp", "not a known option"),
    ("top unknown key", "pod_cidrs", "10.244.1.0/24", "pod_cidrs", "not a known option"),
    ("peers not list", "peers", {"address": "192.168.1.1"}, "peers", "not a list"),
    ("peer asn missing", "peers.0.asn", MISSING, "peers[0].asn", "is missing"),
    ("peer address self", "peers.0.address", "192.168.1.11", "peers[0].address", "node's own address"),
    ("peer hold time one", "peers.0.hold_time", 1, "peers[0].hold_time", "1 or 2 seconds"),
    ("peer port zero", "peers.0.port", 0, "peers[0].port", "out of range"),
    ("peer passive string", "peers.0.passive", "yes", "peers[0].passive", "not true or false"),
    ("peer password quote", "peers.0.md5_password", 'a"b', "peers[0].md5_password", "printable"),
    ("peer password long", "peers.0.md5_password", "x" * 81, "peers[0].md5_password", "1-80"),
    ("peer name quote", "peers.0.name", 'tor"1', "peers[0].name", "not a plain string"),
    ("route protocol zebra", "route_protocol", 11, "route_protocol", "already used"),
    ("route protocol bgp", "route_protocol", 186, "route_protocol", "already used"),
    ("route protocol large", "route_protocol", 256, "route_protocol", "out of range"),
    ("state dir relative", "state_dir", "run/bgpnet", "state_dir", "not an absolute path"),
    ("http listen name", "http", {"listen": "localhost:9180"}, "http.listen", "not host:port"),
    ("http listen port", "http", {"listen": "127.0.0.1:70000"}, "http.listen", "port out of range"),
    ("resync zero", "resync_seconds", 0, "resync_seconds", "out of range"),
    ("restart time zero", "graceful_restart", {"restart_time": 0}, "graceful_restart.restart_time",
     "out of range"),
    ("restart time 12 bits", "graceful_restart", {"restart_time": 4096}, "graceful_restart.restart_time",
     "out of range"),
    ("graceful restart string", "graceful_restart", {"enabled": "yes"}, "graceful_restart.enabled",
     "not true or false"),
]


@pytest.mark.parametrize("label, path, value, field, words", BAD, ids=[row[0] for row in BAD])
def test_bad_value_rejected(label, path, value, field, words):
    with pytest.raises(ConfigError) as caught:
        config.parse(with_change(path, value))
    assert caught.value.field == field
    assert words in str(caught.value)
    assert caught.value.fix


def test_duplicate_peer_rejected():
    doc = copy.deepcopy(VALID)
    doc["peers"].append({"address": "192.168.1.1", "asn": 64513})
    with pytest.raises(ConfigError) as caught:
        config.parse(doc)
    assert caught.value.field == "peers[1].address"
    assert "listed twice" in str(caught.value)


def test_ipv6_node_needs_router_id():
    doc = with_change("node.address", "fd00::11")
    with pytest.raises(ConfigError) as caught:
        config.parse(doc)
    assert caught.value.field == "node.router_id"


def test_valid_config_values():
    cfg = config.parse(copy.deepcopy(VALID))
    assert cfg.node.name == "node01"
    assert cfg.node.router_id == ipaddress.ip_address("192.168.1.11")
    assert cfg.gateway == ipaddress.ip_interface("10.244.1.1/24")
    assert cfg.route_protocol == config.DEFAULT_ROUTE_PROTOCOL
    assert cfg.peers[0].label == "tor"
    assert cfg.http_listen == ("127.0.0.1", 9180)


def test_config_is_frozen():
    cfg = config.parse(copy.deepcopy(VALID))
    with pytest.raises(AttributeError):
        cfg.pod_cidr = ipaddress.ip_network("10.244.2.0/24")  # type: ignore[misc]


def test_password_hidden_in_repr():
    cfg = config.parse(with_change("peers.0.md5_password", "secret-key"))
    assert "secret-key" not in repr(cfg)


def test_load_file_missing(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        config.load_file(tmp_path / "absent.yaml")
    assert "cannot be read" in str(caught.value)


def test_load_file_bad_yaml(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text("node: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        config.load_file(path)
    assert "not valid YAML" in str(caught.value)


def test_shipped_configs_valid():
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert files
    for path in files:
        cfg = config.load_file(path)
        assert cfg.pod_cidr.subnet_of(cfg.cluster_cidr), path


def test_missing_value_not_shown():
    with pytest.raises(ConfigError) as caught:
        config.parse(with_change("node.name", MISSING))
    assert str(caught.value).startswith("node.name is missing;")


def test_load_file_duplicate_key(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text("node: {name: n1, address: 192.168.1.11, asn: 64512}\n"
                    "pod_cidr: 10.244.1.0/24\n"
                    "cluster_cidr: 10.244.0.0/16\n"
                    "pod_cidr: 10.244.2.0/24\n")
    with pytest.raises(ConfigError) as caught:
        config.load_file(path)
    assert caught.value.field == "pod_cidr"
    assert "set twice (line 4)" in str(caught.value)


def test_load_file_yaml_error_names_file(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text("node: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        config.load_file(path)
    assert str(path) in str(caught.value)

"""Unit tests of the CNI request parser: environment and config validation, error codes."""

from __future__ import annotations

import ipaddress
import json

import pytest

from bgpnet.cni import netconf, result
from bgpnet.cni.result import CniError

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/pod",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
CONF = {"cniVersion": "1.1.0", "name": "bgpnet", "type": "bgpnet-cni"}


def parse(env_changes=None, conf_changes=None, drop=()):
    env = {**ENV, **(env_changes or {})}
    conf = {**CONF, **(conf_changes or {})}
    for key in drop:
        env.pop(key, None)
        conf.pop(key, None)
    return netconf.parse_request(env, json.dumps(conf))


def error_code(**kwargs) -> int:
    with pytest.raises(CniError) as info:
        parse(**kwargs)
    return info.value.code


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_add_parses(version):
    request = parse(conf_changes={"cniVersion": version})
    assert request.command == "ADD"
    assert request.container_id == "abc123"
    assert request.conf.cni_version == version
    assert request.version == version


def test_overrides_parse():
    request = parse(conf_changes={"subnet": "10.9.0.0/24", "gateway": "10.9.0.254",
                                  "bridge": "br0", "mtu": 1400, "stateDir": "/tmp/x"})
    assert request.conf.subnet == ipaddress.ip_network("10.9.0.0/24")
    assert request.conf.gateway == ipaddress.ip_address("10.9.0.254")
    assert request.conf.bridge == "br0"
    assert request.conf.mtu == 1400
    assert request.conf.state_dir == "/tmp/x"


def test_unknown_keys_ignored():
    request = parse(conf_changes={"runtimeConfig": {"x": 1}, "args": {"y": 2}})
    assert request.conf.name == "bgpnet"


def test_version_needs_no_config():
    request = netconf.parse_request({"CNI_COMMAND": "VERSION"}, "")
    assert request.command == "VERSION"


def test_cni_args_parse():
    request = parse(env_changes={"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"})
    assert request.args == (("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web"))


def test_del_without_netns():
    request = parse(env_changes={"CNI_COMMAND": "DEL", "CNI_NETNS": ""})
    assert request.netns == ""


ERROR_CASES = [
    ("unknown command", {"env_changes": {"CNI_COMMAND": "FOO"}}, result.INVALID_ENVIRONMENT),
    ("no command", {"drop": ["CNI_COMMAND"]}, result.INVALID_ENVIRONMENT),
    ("no container id", {"drop": ["CNI_CONTAINERID"]}, result.INVALID_ENVIRONMENT),
    ("container id with slash", {"env_changes": {"CNI_CONTAINERID": "../etc"}},
     result.INVALID_ENVIRONMENT),
    ("no ifname", {"drop": ["CNI_IFNAME"]}, result.INVALID_ENVIRONMENT),
    ("ifname too long", {"env_changes": {"CNI_IFNAME": "x" * 16}}, result.INVALID_ENVIRONMENT),
    ("ifname with slash", {"env_changes": {"CNI_IFNAME": "a/b"}}, result.INVALID_ENVIRONMENT),
    ("add without netns", {"drop": ["CNI_NETNS"]}, result.INVALID_ENVIRONMENT),
    ("relative netns", {"env_changes": {"CNI_NETNS": "pod"}}, result.INVALID_ENVIRONMENT),
    ("bad cni args", {"env_changes": {"CNI_ARGS": "novalue"}}, result.INVALID_ENVIRONMENT),
    ("no version", {"drop": ["cniVersion"]}, result.INVALID_CONFIG),
    ("old version", {"conf_changes": {"cniVersion": "0.3.1"}}, result.INCOMPATIBLE_VERSION),
    ("future version", {"conf_changes": {"cniVersion": "2.0.0"}}, result.INCOMPATIBLE_VERSION),
    ("no name", {"drop": ["name"]}, result.INVALID_CONFIG),
    ("bad name", {"conf_changes": {"name": "a/b"}}, result.INVALID_CONFIG),
    ("no type", {"drop": ["type"]}, result.INVALID_CONFIG),
    ("bad subnet", {"conf_changes": {"subnet": "10.0.0.1/24"}}, result.INVALID_CONFIG),
    ("tiny subnet", {"conf_changes": {"subnet": "10.0.0.0/31"}}, result.INVALID_CONFIG),
    ("gateway outside", {"conf_changes": {"subnet": "10.0.0.0/24", "gateway": "10.1.0.1"}},
     result.INVALID_CONFIG),
    ("gateway no subnet", {"conf_changes": {"gateway": "10.1.0.1"}}, result.INVALID_CONFIG),
    ("bad mtu", {"conf_changes": {"mtu": 20}}, result.INVALID_CONFIG),
    ("mtu as text", {"conf_changes": {"mtu": "1500"}}, result.INVALID_CONFIG),
    ("bad bridge", {"conf_changes": {"bridge": "a bridge"}}, result.INVALID_CONFIG),
    ("relative state dir", {"conf_changes": {"stateDir": "run"}}, result.INVALID_CONFIG),
    ("check without prev", {"env_changes": {"CNI_COMMAND": "CHECK"}}, result.INVALID_CONFIG),
    ("gc without list", {"env_changes": {"CNI_COMMAND": "GC"}}, result.INVALID_CONFIG),
    ("gc bad list", {"env_changes": {"CNI_COMMAND": "GC"},
                     "conf_changes": {netconf.VALID_ATTACHMENTS_KEY: [{"ifname": "eth0"}]}},
     result.INVALID_CONFIG),
    ("gc on 1.0.0", {"env_changes": {"CNI_COMMAND": "GC"},
                     "conf_changes": {"cniVersion": "1.0.0"}}, result.INCOMPATIBLE_VERSION),
    ("status on 0.4.0", {"env_changes": {"CNI_COMMAND": "STATUS"},
                         "conf_changes": {"cniVersion": "0.4.0"}}, result.INCOMPATIBLE_VERSION),
]


@pytest.mark.parametrize("kwargs, code", [case[1:] for case in ERROR_CASES],
                         ids=[case[0] for case in ERROR_CASES])
def test_error_code(kwargs, code):
    assert error_code(**kwargs) == code


@pytest.mark.parametrize("text, label", [("not json", "garbage"), ("[1, 2]", "list")])
def test_undecodable_config(text, label):
    with pytest.raises(CniError) as info:
        netconf.parse_request(ENV, text)
    assert info.value.code == result.DECODE_FAILED


def test_valid_attachments_parse():
    request = parse(env_changes={"CNI_COMMAND": "GC"}, conf_changes={
        netconf.VALID_ATTACHMENTS_KEY: [{"containerID": "a", "ifname": "eth0"}]})
    assert request.conf.valid_attachments == (("a", "eth0"),)


def test_error_names_variable():
    with pytest.raises(CniError) as info:
        parse(drop=["CNI_CONTAINERID"])
    assert "CNI_CONTAINERID" in str(info.value)

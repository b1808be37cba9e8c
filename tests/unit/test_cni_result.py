"""Unit tests of the CNI output shapes, the CHECK comparison and the plugin's dispatch."""

from __future__ import annotations

import ipaddress
import json

import pytest

from bgpnet.cni import agent_client, check, plugin, result

ADDRESS = ipaddress.ip_interface("10.244.1.5/24")
GATEWAY = ipaddress.ip_address("10.244.1.1")


def add_result(version: str) -> dict:
    return result.add_result_dict(version, bridge="v-net-0", bridge_mac="02:00:00:00:00:01",
                                  host_ifname="vethabc", host_mac="02:00:00:00:00:02",
                                  ifname="eth0", mac="02:00:00:00:00:03",
                                  sandbox="/run/netns/pod", address=ADDRESS, gateway=GATEWAY)


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_result_has_no_ip_version(version):
    assert "version" not in add_result(version)["ips"][0]


def test_result_040_has_ip_version():
    assert add_result("0.4.0")["ips"][0]["version"] == "4"


def test_result_ip_points_at_container():
    data = add_result("1.1.0")
    assert data["interfaces"][data["ips"][0]["interface"]]["sandbox"] == "/run/netns/pod"


def test_result_default_route():
    assert add_result("1.1.0")["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]


def test_error_without_details():
    assert "details" not in result.error_dict("1.1.0", 7, "bad")


@pytest.mark.parametrize("text, expected", [
    ('{"cniVersion": "0.4.0"}', "0.4.0"),
    ('{"cniVersion": "0.3.1"}', "1.1.0"),
    ("garbage", "1.1.0"),
], ids=["supported", "unsupported", "garbage"])
def test_answer_version(text, expected):
    assert result.answer_version(text) == expected


def observed(**changes) -> check.Observed:
    values = dict(link_present=True, mac="02:00:00:00:00:03", addresses=(ADDRESS,),
                  default_gateways=(GATEWAY,), lease=ADDRESS, host_link_present=True)
    values.update(changes)
    return check.Observed(**values)


def expected() -> check.Expected:
    return check.expected_from_prev_result(add_result("1.1.0"), "eth0", "/run/netns/pod")


def test_expected_from_prev_result():
    assert expected() == check.Expected(addresses=(ADDRESS,), gateways=(GATEWAY,),
                                        mac="02:00:00:00:00:03")


def test_expected_missing_interface():
    with pytest.raises(ValueError):
        check.expected_from_prev_result(add_result("1.1.0"), "eth1", "/run/netns/pod")


DIFFERENCE_CASES = [
    ("link missing", {"link_present": False}, "interface eth0 is missing"),
    ("address missing", {"addresses": ()}, "address 10.244.1.5/24 is missing"),
    ("lease missing", {"lease": None}, "lease for eth0 is missing"),
    ("route missing", {"default_gateways": ()}, "default route via 10.244.1.1"),
    ("mac changed", {"mac": "02:00:00:00:00:99"}, "has MAC 02:00:00:00:00:99"),
    ("host veth missing", {"host_link_present": False}, "host end of the veth"),
]


@pytest.mark.parametrize("changes, phrase", [case[1:] for case in DIFFERENCE_CASES],
                         ids=[case[0] for case in DIFFERENCE_CASES])
def test_check_difference(changes, phrase):
    found = check.differences(expected(), observed(**changes), "eth0")
    assert any(phrase in line for line in found), found


def test_check_no_difference():
    assert check.differences(expected(), observed(), "eth0") == []


# plugin.run: the dispatch between the agent and the direct path, without the kernel.

CONF = json.dumps({"cniVersion": "1.0.0", "name": "bgpnet", "type": "bgpnet-cni"})
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "HOME": "/root"}


def test_version_output():
    status, output = plugin.run({"CNI_COMMAND": "VERSION"}, "")
    assert status == 0
    assert output == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_agent_reply_passed(monkeypatch):
    sent = []
    monkeypatch.setattr(agent_client, "call",
                        lambda request: sent.append(request) or {"ok": True, "result": {"a": 1}})
    assert plugin.run(ENV, CONF) == (0, {"a": 1})
    assert sent[0]["env"] == {key: ENV[key] for key in ENV if key.startswith("CNI_")}


def test_agent_error_passed(monkeypatch):
    error = {"cniVersion": "1.0.0", "code": 7, "msg": "bad"}
    monkeypatch.setattr(agent_client, "call", lambda request: {"ok": False, "error": error})
    assert plugin.run(ENV, CONF) == (1, error)


def test_agent_timeout_try_again(monkeypatch):
    def fail(request):
        raise agent_client.AgentUnavailable("timed out")

    monkeypatch.setattr(agent_client, "call", fail)
    status, output = plugin.run(ENV, CONF)
    assert status == 1
    assert output["code"] == result.TRY_AGAIN_LATER
    assert output["cniVersion"] == "1.0.0"


def test_invalid_config_without_agent(monkeypatch):
    monkeypatch.setattr(agent_client, "call", lambda request: None)
    status, output = plugin.run(ENV, '{"cniVersion": "1.0.0"}')
    assert status == 1
    assert output["code"] == result.INVALID_CONFIG


def test_fast_path_skips_parser(monkeypatch):
    """The fast path must not import netconf (and through it ipam) before the agent replies."""
    import subprocess
    import sys

    code = ("import sys, json; from bgpnet.cni import plugin, agent_client; "
            "agent_client.call = lambda request: {'ok': True, 'result': None}; "
            "plugin.run({'CNI_COMMAND': 'DEL'}, '{}'); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('bgpnet', 'pyroute2')))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == ["bgpnet", "bgpnet.cni", "bgpnet.cni.agent_client",
                                       "bgpnet.cni.plugin", "bgpnet.cni.result"]

"""ExaBGP config rendering, checked by ExaBGP's own validator."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bgpnet import config
from bgpnet.exabgp import confgen
from tests.unit.test_config import VALID

RELAY = [sys.executable, "-m", "bgpnet.exabgp.relay", "/run/bgpnet/exabgp.sock"]


def make_config(**peer_changes) -> config.AgentConfig:
    doc = copy.deepcopy(VALID)
    doc["peers"][0].update(peer_changes)
    return config.parse(doc)


def test_pod_cidr_is_static_route():
    text = confgen.render_config(make_config(), RELAY)
    assert "static { route 10.244.1.0/24 next-hop self; }" in text


def test_neighbor_fields():
    text = confgen.render_config(make_config(hold_time=30), RELAY)
    assert "neighbor 192.168.1.1 {" in text
    assert "local-address 192.168.1.11;" in text
    assert "peer-as 64512;" in text
    assert "hold-time 30;" in text
    assert "passive;" not in text


def test_passive_peer_listens():
    cfg = make_config(passive=True)
    text = confgen.render_config(cfg, RELAY)
    env = confgen.render_environment(cfg)
    assert "passive;" in text
    assert "listen 179;" in text
    assert env["exabgp.tcp.bind"] == "192.168.1.11"


def test_active_peer_does_not_bind():
    env = confgen.render_environment(make_config())
    assert env["exabgp.tcp.bind"] == ""


def test_api_children_run_as_root():
    env = confgen.render_environment(make_config())
    assert env["exabgp.daemon.user"] == "root"


def test_adj_rib_in_off():
    text = confgen.render_config(make_config(), RELAY)
    assert "adj-rib-in false;" in text


def test_graceful_restart_capability():
    text = confgen.render_config(make_config(), RELAY)
    assert "capability { graceful-restart 120; }" in text


def test_graceful_restart_disabled():
    doc = copy.deepcopy(VALID)
    doc["graceful_restart"] = {"enabled": False}
    text = confgen.render_config(config.parse(doc), RELAY)
    assert "graceful-restart" not in text


def test_open_messages_received():
    text = confgen.render_config(make_config(), RELAY)
    assert "receive { parsed; update; notification; open; }" in text


def test_md5_password_rendered():
    text = confgen.render_config(make_config(md5_password="s3cret key"), RELAY)
    assert 'md5-password "s3cret key";' in text


def test_relay_command_quoted():
    text = confgen.render_config(make_config(), ["/opt/my venv/python", "-m", "x"])
    assert "run '/opt/my venv/python' -m x;" in text


@pytest.mark.parametrize("changes", [{}, {"passive": True, "md5_password": "k", "port": 1179}],
                         ids=["plain", "passive-md5-port"])
def test_exabgp_accepts_config(tmp_path: Path, changes):
    exabgp = shutil.which("exabgp") or str(Path(sys.executable).parent / "exabgp")
    path = tmp_path / "exabgp.conf"
    path.write_text(confgen.render_config(make_config(**changes), RELAY))
    result = subprocess.run([exabgp, "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

import pytest

from provisioner import config
from provisioner.boot.counters import Counters
from provisioner.boot.dhcp import DhcpService, assign_addresses, parse_log_line
from provisioner.boot.render import Renderer
from provisioner.errors import ConfigError


def test_addresses_are_fixed_per_node_and_unique():
    a = assign_addresses([1, 2, 5], "10.0.0.10", "10.0.0.19")
    assert a == {1: "10.0.0.10", 2: "10.0.0.11", 5: "10.0.0.14"}
    assert assign_addresses([1, 2], "10.0.0.10", "10.0.0.19")[2] == a[2]  # others do not shift
    wrapped = assign_addresses([1, 11], "10.0.0.10", "10.0.0.19")
    assert len(set(wrapped.values())) == 2
    with pytest.raises(ConfigError, match="widen"):
        assign_addresses([1, 2, 3], "10.0.0.10", "10.0.0.11")


def test_dnsmasq_log_lines_are_parsed():
    line = "Nov 21 23:48:02 dnsmasq-dhcp[3584]: 1066 DHCPACK(provbr0) 10.99.0.199 52:54:00:99:02:02 lab-r2-n1"
    assert parse_log_line(line) == ("DHCPACK", "52:54:00:99:02:02", "10.99.0.199", "lab-r2-n1")
    assert parse_log_line("dnsmasq-dhcp[1]: 9 DHCPDISCOVER(br0) 52:54:00:00:00:09 ignored")[3] == "ignored"
    assert parse_log_line("dnsmasq-dhcp[1]: 9 sent size: 1 option: 53") is None


def service(tmp_path, **changes):
    settings = config.Settings(server_data_dir=tmp_path, **changes)
    return DhcpService(settings, Renderer(), Counters())


def test_server_config_answers_firmware_by_kind(tmp_path):
    text = service(tmp_path, dhcp_interface="br0").render_config()
    assert "interface=br0" in text and "dhcp-ignore=tag:!known" in text and "port=0" in text
    assert "dhcp-boot=tag:ipxe,boot.ipxe" in text
    assert "dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi" in text
    assert "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe" in text
    # The only boot server here: iPXE is told not to wait for ProxyDHCP offers.
    assert "dhcp-option=tag:ipxe,encap:175,176,1" in text


def test_proxy_mode_hands_out_no_addresses(tmp_path):
    svc = service(tmp_path, dhcp_mode="proxy", dhcp_proxy_subnet="192.0.2.0")
    text = svc.render_config()
    assert "dhcp-range=192.0.2.0,proxy" in text and "pxe-service=tag:!ipxe,x86PC" in text
    assert "175,176" not in text, "a ProxyDHCP server's offer is the one iPXE must wait for"
    assert svc.hosts_lines([(1, "52:54:00:00:00:01", "n1")]) == ["52:54:00:00:00:01,set:enrolled,n1\n"]


def test_hosts_file_gives_each_node_its_address(tmp_path):
    svc = service(tmp_path)
    svc.write_hosts([(2, "52:54:00:00:00:02", "n2"), (1, "52:54:00:00:00:01", "n1")])
    assert svc.hosts_file.read_text().splitlines() == [
        "52:54:00:00:00:01,set:enrolled,10.99.0.100,n1", "52:54:00:00:00:02,set:enrolled,10.99.0.101,n2"]


def test_unknown_macs_are_recorded_only_in_discover_mode(tmp_path):
    seen = []
    line = "dnsmasq-dhcp[1]: 9 DHCPDISCOVER(br0) 52:54:00:00:00:09 ignored"
    for mode, expected in (("ignore", []), ("discover", ["52:54:00:00:00:09"])):
        seen.clear()
        svc = DhcpService(config.Settings(server_data_dir=tmp_path, dhcp_unknown_macs=mode), Renderer(),
                          Counters(), on_unknown_mac=seen.append)
        svc._observe(line)
        assert seen == expected and svc.counters.snapshot() == {"dhcp:ignored": 1}


def test_router_advertisements_are_opt_in_and_need_an_interface(tmp_path):
    assert "enable-ra" not in service(tmp_path, dhcp_interface="br0").render_config()
    text = service(tmp_path, dhcp_interface="br0", dhcp_router_advertisements=True).render_config()
    assert "enable-ra" in text and "dhcp-range=::,constructor:br0,ra-only" in text
    with pytest.raises(ConfigError, match="needs dhcp.interface"):
        config.validate(config.Settings(dhcp_router_advertisements=True))


def test_a_dnsmasq_left_by_a_killed_daemon_is_found_by_its_pid_file_and_stopped(tmp_path):
    import subprocess
    import sys
    from provisioner.boot.dhcp import stale_dnsmasq
    from provisioner.processes import stop_pids
    conf, pid_file = tmp_path / "dnsmasq.conf", tmp_path / "dnsmasq.pid"
    assert stale_dnsmasq(pid_file, conf) is None  # no pid file
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--conf-file={conf}"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--conf-file=/elsewhere"])
    try:
        pid_file.write_text(f"{other.pid}\n")
        assert stale_dnsmasq(pid_file, conf) is None  # a process on another configuration is not ours
        pid_file.write_text("not a pid\n")
        assert stale_dnsmasq(pid_file, conf) is None
        pid_file.write_text(f"{left.pid}\n")
        assert stale_dnsmasq(pid_file, conf) == left.pid
        stop_pids([left.pid], grace=5)
        assert left.wait(timeout=5) is not None
    finally:
        for proc in (left, other):
            proc.kill()
            proc.wait()

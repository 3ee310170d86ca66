"""The IPMI driver against a real IPMI server, and dnsmasq against our configs."""

import subprocess

import pytest

from provisioner import config
from provisioner.boot.counters import Counters
from provisioner.boot.dhcp import DhcpService
from provisioner.boot.render import Renderer
from provisioner.errors import BmcAuthError, BmcProtocolError
from provisioner.models import BmcCredentials, BootDevice, PowerAction, PowerState
from provisioner.power.ipmi import IpmiPowerDriver
from provisioner.power.manager import PowerManager
from provisioner.secrets import Secret


def test_power_and_boot_device_over_real_ipmi(loopback_bmc):
    port, user, password = loopback_bmc
    manager = PowerManager(IpmiPowerDriver(), min_interval=0.05, verify_timeout=5)
    bmc = BmcCredentials("127.0.0.1", port, user, Secret(password), 3)
    assert manager.status(bmc) == PowerState.OFF
    manager.set_boot_device(bmc, BootDevice.NETWORK)
    assert manager.apply(bmc, PowerAction.ON) == PowerState.ON
    assert manager.apply(bmc, PowerAction.CYCLE) == PowerState.ON
    assert manager.apply(bmc, PowerAction.OFF) == PowerState.OFF


def test_every_command_closes_its_ipmi_session(loopback_bmc):
    """A BMC has few session slots; a session left open is also kept alive by pyghmi, and
    virtualbmc restarts (2.5 s lost) on a keepalive for a session it has dropped."""
    from pyghmi.ipmi.private.session import Session
    port, user, password = loopback_bmc
    driver = IpmiPowerDriver()
    bmc = BmcCredentials("127.0.0.1", port, user, Secret(password), 3)

    def open_sessions() -> list:
        return [s for s in Session.keepalive_sessions if s.port == port] + \
            [a for a in Session.bmc_handlers if port in a[1:2]]

    assert driver.get_power(bmc) == PowerState.OFF
    assert open_sessions() == []
    driver.set_boot_device(bmc, BootDevice.DISK)
    driver.set_power(bmc, PowerState.ON)
    assert open_sessions() == []
    assert driver.get_power(bmc) == PowerState.ON, "a new session for every command"
    driver.set_power(bmc, PowerState.OFF)


def test_wrong_password_over_real_ipmi_is_not_retried(loopback_bmc):
    port, user, _ = loopback_bmc
    slept = []
    manager = PowerManager(IpmiPowerDriver(), min_interval=0, sleep=slept.append)
    with pytest.raises(BmcAuthError, match="refused the credentials"):
        manager.status(BmcCredentials("127.0.0.1", port, user, Secret("not-it"), 3))
    assert slept == []


def test_a_cipher_suite_the_bmc_does_not_honour_is_named(loopback_bmc):
    # pyghmi's BMC server (like virtualbmc, built on it) answers suite 17 as if it were 3.
    port, user, password = loopback_bmc
    with pytest.raises(BmcProtocolError, match="set the node's cipher suite to 3"):
        IpmiPowerDriver().get_power(BmcCredentials("127.0.0.1", port, user, Secret(password), 17))


@pytest.mark.parametrize("mode, ra", [("server", False), ("proxy", False), ("server", True)])
def test_dnsmasq_accepts_the_rendered_config(tmp_path, mode, ra):
    settings = config.Settings(server_data_dir=tmp_path, dhcp_mode=mode, dhcp_interface="lo",
                               dhcp_router_advertisements=ra)
    svc = DhcpService(settings, Renderer(), Counters())
    svc.conf_file.parent.mkdir(parents=True)
    svc.conf_file.write_text(svc.render_config())
    svc.write_hosts([(1, "52:54:00:00:00:01", "n1")])
    check = subprocess.run(["dnsmasq", "--test", f"--conf-file={svc.conf_file}"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

"""The Redfish driver against a real Redfish service (sushy-tools' emulator over TLS),
and enrollment of a Redfish BMC through the daemon: each bad input one line, nothing stored."""

import json
import socket

import pytest
import requests

from provisioner.daemon import Daemon
from provisioner.errors import BmcAuthError, BmcProtocolError, BmcUnreachable
from provisioner.models import BmcCredentials, BmcDriver, BootDevice, BootMode, PowerAction, PowerState
from provisioner.power.manager import PowerManager
from provisioner.power.redfish import RedfishPowerDriver
from provisioner.secrets import Secret

from .conftest import Running, free_port, settings_for
from .redfish_bmc import SYSTEM
from .test_bad_input import assert_nothing_enrolled, one_line


def creds(bmc, password=None, system=SYSTEM, port=None) -> BmcCredentials:
    return BmcCredentials("127.0.0.1", port or bmc.port, bmc.user, Secret(password or bmc.password),
                          driver=BmcDriver.REDFISH, system=system)


def boot_override(bmc) -> dict:
    doc = requests.get(bmc.url + SYSTEM, auth=(bmc.user, bmc.password), verify=str(bmc.ca), timeout=10).json()
    return doc["Boot"]


def test_power_and_boot_override_over_real_redfish(redfish_bmc, caplog):
    # The emulator's systems take 1 to 11 s to change power state, as real ones take time.
    manager = PowerManager(RedfishPowerDriver(ca_bundle=str(redfish_bmc.ca)), min_interval=0, verify_timeout=20)
    bmc = creds(redfish_bmc)
    assert manager.status(bmc) == PowerState.OFF
    manager.set_boot_device(bmc, BootDevice.NETWORK, BootMode.UEFI)
    boot = boot_override(redfish_bmc)
    # The emulator, like some BMCs, does not keep a one-time override: it reads back as
    # continuous. The driver notices, says so, and leaves it set continuous (safe: the disk
    # is set for good once a deploy wrote it).
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"],
            boot["BootSourceOverrideMode"]) == ("Pxe", "Continuous", "UEFI")
    assert "one-time boot override did not hold" in caplog.text
    assert manager.apply(bmc, PowerAction.ON) == PowerState.ON
    manager.set_boot_device(bmc, BootDevice.DISK, BootMode.LEGACY)
    boot = boot_override(redfish_bmc)
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"],
            boot["BootSourceOverrideMode"]) == ("Hdd", "Continuous", "Legacy")
    # The only system is found without its path.
    assert manager.status(creds(redfish_bmc, system=None)) == PowerState.ON


def test_secure_boot_is_switched_with_the_boot_override_and_read_back(redfish_bmc):
    """Off for a network boot (iPXE is not signed), on for the disk, through the system's
    SecureBoot resource; the emulator's own record says so."""
    manager = PowerManager(RedfishPowerDriver(ca_bundle=str(redfish_bmc.ca)), min_interval=0)
    bmc = creds(redfish_bmc)

    def enabled() -> bool:
        doc = requests.get(f"{redfish_bmc.url}{SYSTEM}/SecureBoot", auth=(bmc.username, redfish_bmc.password),
                           verify=str(redfish_bmc.ca), timeout=10).json()
        return doc["SecureBootEnable"]
    manager.set_boot_device(bmc, BootDevice.DISK, BootMode.UEFI, secure_boot=True)
    assert enabled() is True and manager.secure_boot(bmc) is True
    manager.set_boot_device(bmc, BootDevice.NETWORK, BootMode.UEFI, secure_boot=False)
    assert enabled() is False and manager.secure_boot(bmc) is False
    manager.set_boot_device(bmc, BootDevice.NETWORK, BootMode.UEFI)  # None: left as it is
    assert enabled() is False


def test_redfish_errors_are_ours_and_named(redfish_bmc):
    driver = RedfishPowerDriver(ca_bundle=str(redfish_bmc.ca), timeout=3)
    with pytest.raises(BmcAuthError, match="refused the credentials"):
        driver.get_power(creds(redfish_bmc, password="not-it"))
    with pytest.raises(BmcProtocolError, match="no system /redfish/v1/Systems/nope at this BMC"):
        driver.get_power(creds(redfish_bmc, system="/redfish/v1/Systems/nope"))
    with pytest.raises(BmcUnreachable, match="did not answer"):
        driver.get_power(creds(redfish_bmc, port=free_port()))
    with pytest.raises(BmcProtocolError, match="TLS certificate could not be verified.*redfish_ca_bundle"):
        RedfishPowerDriver(timeout=3).get_power(creds(redfish_bmc))  # the system's CAs do not know it
    assert RedfishPowerDriver(insecure=True).get_power(creds(redfish_bmc)) == PowerState.OFF


@pytest.fixture
def redfish_running(workdir, redfish_bmc):
    daemon = Daemon(settings_for(workdir, power_driver="bmc", power_redfish_ca_bundle=str(redfish_bmc.ca),
                                 power_timeout=3.0, power_retries=0))
    daemon.start()
    running = Running(daemon, workdir)
    running.password_file.write_text(redfish_bmc.password + "\n")
    yield running, redfish_bmc
    daemon.stop()


def test_a_redfish_bmc_is_enrolled_by_url_or_detected(redfish_running):
    running, bmc = redfish_running
    code, out, err = running.cli(*running.enroll_args("52:54:00:00:00:aa", bmc.url, "rack-1", "--name", "a",
                                                      "--bmc-system", SYSTEM, "--no-inspect"))
    assert code == 0, err
    doc = running.client.get("/v1/nodes/a")["bmc"]
    assert (doc["driver"], doc["address"], doc["port"], doc["system"]) == ("redfish", "127.0.0.1", bmc.port, SYSTEM)
    # No driver and no scheme: Redfish is tried first, and answers.
    code, out, err = running.cli(*running.enroll_args("52:54:00:00:00:ab", f"127.0.0.1:{bmc.port}", "rack-1",
                                                      "--name", "b", "--no-inspect"))
    assert code == 0, err
    assert running.client.get("/v1/nodes/b")["bmc"]["driver"] == "redfish"
    code, out, _ = running.cli("show", "a")
    assert f"Redfish https://127.0.0.1:{bmc.port}{SYSTEM} user admin" in out and bmc.password not in out
    code, out, err = running.cli("--json", "power", "status", "a")
    assert code == 0 and json.loads(out)["results"][0]["power_state"] == "off", out + err


@pytest.mark.parametrize("case", ["wrong password", "unreachable", "unknown system", "http", "ipmi system"])
def test_redfish_bad_input_is_one_line_and_stores_nothing(redfish_running, case):
    running, bmc = redfish_running
    address, extra, expected = bmc.url, [], ""
    if case == "wrong password":
        running.password_file.write_text("not-the-password\n")
        expected = "refused the credentials"
    elif case == "unreachable":
        address, expected = f"https://127.0.0.1:{free_port()}", "did not answer"
    elif case == "unknown system":
        extra, expected = ["--bmc-system", "/redfish/v1/Systems/nope"], "no system /redfish/v1/Systems/nope"
    elif case == "http":
        address, expected = f"http://127.0.0.1:{bmc.port}", "over https only"
    elif case == "ipmi system":
        extra, expected = ["--bmc-driver", "ipmi", "--bmc-system", SYSTEM], "an IPMI BMC has none"
        address = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    code, _, err = running.cli(*running.enroll_args("52:54:00:00:00:aa", address, "rack-1", *extra))
    assert code in (1, 2) and expected in one_line(err), err
    assert "Traceback" not in err and bmc.password not in err
    assert_nothing_enrolled(running)


def test_a_certificate_the_daemon_cannot_verify_stops_enrollment(workdir, redfish_bmc):
    daemon = Daemon(settings_for(workdir, power_driver="bmc", power_timeout=3.0, power_retries=0))
    daemon.start()  # no CA bundle: the system's CAs, which do not know the emulator's
    try:
        running = Running(daemon, workdir)
        running.password_file.write_text(redfish_bmc.password + "\n")
        code, _, err = running.cli(*running.enroll_args("52:54:00:00:00:aa", redfish_bmc.url))
        assert code == 1 and "TLS certificate could not be verified" in one_line(err), err
        assert_nothing_enrolled(running)
        # Detecting (no driver, no scheme): Redfish's certificate fails, IPMI does not answer
        # there either; the certificate is the telling error.
        code, _, err = running.cli(*running.enroll_args("52:54:00:00:00:aa", f"127.0.0.1:{redfish_bmc.port}"))
        assert code == 1 and "TLS certificate could not be verified" in one_line(err), err
        assert_nothing_enrolled(running)
    finally:
        daemon.stop()

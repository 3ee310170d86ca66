import struct

from pyghmi import exceptions as pyghmi_exc

from provisioner.errors import BmcAuthError, BmcProtocolError, BmcUnreachable
from provisioner.models import BmcCredentials
from provisioner.power.ipmi import IpmiPowerDriver
from provisioner.secrets import Secret


def creds(suite):
    return BmcCredentials("10.0.0.1", 623, "admin", Secret("pw"), suite)


def test_the_virtualbmc_suite_mismatch_says_which_suite_to_use():
    exc = struct.error("pack expected 32 items for packing (got 20)")
    err = IpmiPowerDriver()._translate(creds(17), exc)
    assert isinstance(err, BmcProtocolError) and "set the node's cipher suite to 3" in str(err)


def test_pyghmi_errors_map_to_ours():
    drv = IpmiPowerDriver()
    assert isinstance(drv._translate(creds(3), pyghmi_exc.IpmiException("Incorrect password provided")), BmcAuthError)
    assert isinstance(drv._translate(creds(3), pyghmi_exc.IpmiException("Unauthorized name in RAKP2")), BmcAuthError)
    assert isinstance(drv._translate(creds(3), pyghmi_exc.IpmiException(None)), BmcUnreachable)
    assert isinstance(drv._translate(creds(3), pyghmi_exc.IpmiException("timeout")), BmcUnreachable)
    other = drv._translate(creds(3), pyghmi_exc.IpmiException("Node busy"))
    assert isinstance(other, BmcProtocolError) and "Node busy" in str(other)

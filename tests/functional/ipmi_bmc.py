"""A BMC on loopback for functional tests: pyghmi's IPMI server (the code virtualbmc is
built on) with power and boot device kept in memory. Usage: ipmi_bmc.py PORT USER PASSWORD"""

import sys

from pyghmi.ipmi import bmc


class LoopbackBmc(bmc.Bmc):
    def __init__(self, authdata, port):
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.power = "off"
        self.bootdev = "default"

    def get_power_state(self):
        return self.power

    def power_on(self):
        self.power = "on"

    def power_off(self):
        self.power = "off"

    def power_shutdown(self):
        self.power = "off"

    def power_reset(self):
        pass

    def get_boot_device(self):
        return self.bootdev

    def set_boot_device(self, bootdevice):
        self.bootdev = bootdevice


if __name__ == "__main__":
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    print("listening", flush=True)
    LoopbackBmc({user: password}, port).listen()

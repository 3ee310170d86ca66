"""A dropped SSH channel is our HostError, named after the host, never paramiko's own."""

import paramiko
import pytest

from provisioner.errors import HostError
from provisioner.hypervisor.ssh import Session


class DroppedClient:
    closed = False

    def exec_command(self, command, timeout=None):
        raise paramiko.SSHException("Channel closed.")

    def close(self):
        self.closed = True


def test_a_dropped_channel_is_a_host_error_and_the_session_still_closes():
    client = DroppedClient()
    with pytest.raises(HostError, match=r"host kvm-1 \(10.0.0.5\): SSH session failed.*Channel closed"):
        with Session("kvm-1", "10.0.0.5", client) as session:  # type: ignore[arg-type]
            session.run("uptime")
    assert client.closed

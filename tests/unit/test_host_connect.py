"""Connections to hosts: the files libvirt's ssh runs are replaced whole, never rewritten
under a running connection, and failures are named from ssh's own words."""

import os
from pathlib import Path

from provisioner.errors import HostError, HostUnreachable
from provisioner.hypervisor.connect import connect_error, known_hosts_file, ssh_command

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJv8 root@h"


def test_the_wrapper_is_replaced_whole_and_left_alone_when_unchanged(tmp_path):
    folder = tmp_path / "known_hosts"
    known = known_hosts_file(folder, "h1", "10.0.0.5", KEY)
    wrapper = ssh_command(folder, "h1", known)
    first = wrapper.stat().st_ino, known.stat().st_ino
    assert oct(wrapper.stat().st_mode & 0o777) == "0o700" and oct(known.stat().st_mode & 0o777) == "0o600"
    # The same host again (another connection, maybe while the first still runs the wrapper).
    assert (ssh_command(folder, "h1", known_hosts_file(folder, "h1", "10.0.0.5", KEY)).stat().st_ino,
            known.stat().st_ino) == first, "an unchanged file is not touched"
    # A new key: a new file, put in place by rename (a running wrapper keeps its own).
    known_hosts_file(folder, "h1", "10.0.0.5", "ssh-ed25519 AAAAother root@h")
    assert known.stat().st_ino != first[1] and "AAAAother" in known.read_text()
    assert sorted(os.listdir(folder)) == ["h1", "h1.ssh"], "no temporary file left"


def test_failures_are_named_from_ssh_s_words_not_from_our_paths():
    key = Path("/var/lib/provisioner/ssh/id_ed25519")
    busy = ("Cannot recv data: libvirt:  error : cannot execute binary /var/lib/provisioner/known_hosts/h1.ssh: "
            "Text file busy: Connection reset by peer")
    error = connect_error("h1", "10.0.0.5", busy, key)
    assert type(error) is HostError and "libvirt connection failed" in str(error)
    changed = "Cannot recv data: Host key verification failed.: Connection reset by peer"
    assert "host key is not the one recorded" in str(connect_error("h1", "10.0.0.5", changed, key))
    refused = "Cannot recv data: ssh: connect to host 10.0.0.5 port 22: Connection refused: Connection reset by peer"
    assert isinstance(connect_error("h1", "10.0.0.5", refused, key), HostUnreachable)
    denied = "Cannot recv data: root@10.0.0.5: Permission denied (publickey).: Connection reset by peer"
    assert "refused the provisioner's SSH key" in str(connect_error("h1", "10.0.0.5", denied, key))

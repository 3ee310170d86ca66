"""Run one command on a lab host over SSH (paramiko), from inside the lab's namespace:
    ip netns exec provlab python tests/lab/ssh_run.py ADDRESS KEY_FILE HOST_KEY_LINE COMMAND
Prints the command's output; exits with its status. The host key must match the one the
provisioner recorded at deploy time (no blind trust)."""

import base64
import sys

import paramiko


def main() -> int:
    address, key_file, host_key_line, command = sys.argv[1:5]
    kind, blob = host_key_line.split()[:2]
    client = paramiko.SSHClient()
    client.get_host_keys().add(address, kind, paramiko.Ed25519Key(data=base64.b64decode(blob)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(address, username="root", key_filename=key_file, timeout=20, allow_agent=False,
                   look_for_keys=False)
    try:
        _, out, err = client.exec_command(command, timeout=60)
        sys.stdout.write(out.read().decode())
        sys.stderr.write(err.read().decode())
        return out.channel.recv_exit_status()
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())

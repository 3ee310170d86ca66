"""Run inside the lab namespace (where a host's address is reachable), as the daemon
would: open libvirt on a host over qemu+libssh with its recorded host key, then with a
wrong key, then at an address nobody answers. Prints one JSON object.
    ip netns exec provlab python tests/lab/host_connect_check.py ADDRESS HOST_KEY KEY_FILE KNOWN_DIR NOBODY"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from provisioner.errors import ProvisionerError  # noqa: E402
from provisioner.hypervisor.connect import open_host  # noqa: E402
from provisioner.sshkeys import new_keypair  # noqa: E402


def attempt(address: str, host_key: str, key_file: Path, known: Path) -> dict:
    try:
        conn = open_host("lab-host", address, host_key, key_file, known)
    except ProvisionerError as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    try:
        return {"ok": True, "domains": sorted(d.name() for d in conn.listAllDomains(0)),
                "pools": sorted(conn.listStoragePools())}
    finally:
        conn.close()


def main() -> int:
    address, host_key, key_file, known = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    nobody = sys.argv[5]  # an address on the lab's subnet nothing answers
    print(json.dumps({"recorded": attempt(address, host_key, key_file, known),
                      "changed": attempt(address, new_keypair("impostor")[1], key_file, known),
                      "unreachable": attempt(nobody, host_key, key_file, known)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

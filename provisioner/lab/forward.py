"""The lab's dashboard port: a port on this machine's loopback that leads to the lab
daemon's HTTP port inside the lab's network namespace. Each connection is made from
inside the namespace (setns on its own thread) and the bytes are pumped both ways, so a
browser on this machine talks TCP to the daemon as one on the provisioning network
would. `lab up` runs it as a process of its own (`python -m provisioner.lab.forward`);
`lab down` stops it."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
import time

CLONE_NEWNET = 0x40000000


def _enter(netns: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns} failed")
    finally:
        os.close(fd)


class NetnsPort:
    def __init__(self, netns: str, address: str, port: int, listen_port: int = 0) -> None:
        self.netns, self.target = netns, (address, port)
        self.listener = socket.create_server(("127.0.0.1", listen_port))
        self.port = self.listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="netns-port", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        _enter(self.netns)  # this thread only: its sockets are made in the lab's namespace
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._open |= {client, upstream}
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for sock in list(self._open):
            sock.close()


def main(argv: list[str]) -> int:
    """NETNS ADDRESS PORT LISTEN_PORT: forward until killed."""
    netns, address, port, listen = argv[0], argv[1], int(argv[2]), int(argv[3])
    NetnsPort(netns, address, port, listen)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The virtual lab: a network namespace with a bridge, libvirtd inside it, qemu domains
that PXE-boot like empty servers, a virtual BMC per domain, and the daemon."""

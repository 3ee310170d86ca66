"""Hypervisor hosts through libvirt: connections, the storage pool that holds shared
read-only bases and per-guest overlays, and guest domains."""

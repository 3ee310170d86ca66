"""Guests per role on the hosts: the roles file, placement, and (next) libvirt."""

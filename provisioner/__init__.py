"""provisioner: a bare-metal provisioning service (enroll, inspect, image, roll back)."""

__version__ = "0.1.0"

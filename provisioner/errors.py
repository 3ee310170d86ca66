"""One exception tree for the whole project: each error knows if it is retryable,
its HTTP status and its CLI exit code."""

from __future__ import annotations


class ProvisionerError(Exception):
    """Base of every error we raise on purpose."""

    message = "provisioner error"
    http_status = 500
    exit_code = 1
    retryable = False

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        text = message if message is not None else self.message
        if kwargs:
            text = text % kwargs
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


# -- usage / input -------------------------------------------------------------
class InvalidInput(ProvisionerError):
    message = "invalid input"
    http_status = 400
    exit_code = 2


class NotFound(ProvisionerError):
    message = "not found"
    http_status = 404
    exit_code = 1


class Conflict(ProvisionerError):
    message = "conflict"
    http_status = 409
    exit_code = 1


class NodeBusy(Conflict):
    message = "node %(node)s is busy: %(what)s; wait for it to finish"


class InvalidTransition(Conflict):
    message = "node %(node)s cannot %(event)s while %(state)s"


class Unauthorized(ProvisionerError):
    message = "missing or invalid token"
    http_status = 401
    exit_code = 1


# -- configuration -------------------------------------------------------------
class ConfigError(ProvisionerError):
    message = "configuration error"
    exit_code = 2


# -- power / BMC ---------------------------------------------------------------
class PowerError(ProvisionerError):
    """Something went wrong talking to a BMC."""

    message = "power error"
    http_status = 502


class BmcUnreachable(PowerError):
    message = "BMC %(bmc)s did not answer: check its address and that it is powered and cabled"
    retryable = True


class BmcAuthError(PowerError):
    message = "BMC %(bmc)s refused the credentials: check the BMC user and password"


class BmcProtocolError(PowerError):
    message = "BMC %(bmc)s: %(detail)s"


class PowerStateMismatch(PowerError):
    message = "BMC %(bmc)s accepted power %(wanted)s but the machine is still %(actual)s"
    retryable = True


# -- boot / images / daemon ----------------------------------------------------
class DaemonUnavailable(ProvisionerError):
    message = "cannot reach the provisioner daemon at %(url)s: is 'provisioner serve' running?"
    exit_code = 1


class ImageRefused(InvalidInput):
    """An image failed inspection at import: nothing was stored."""

    message = "image refused"


class ImageInUse(Conflict):
    message = "image %(image)s is in use by %(users)s"


class DeployError(ProvisionerError):
    """Laying a host image down failed on the node."""

    message = "deploy failed"


class LabError(ProvisionerError):
    message = "lab error"



class HostError(ProvisionerError):
    """A hypervisor host (its libvirtd, its storage, a guest on it) failed us."""

    message = "host error"
    http_status = 502


class HostUnreachable(HostError):
    message = "host %(host)s is unreachable"
    retryable = True

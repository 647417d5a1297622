"""Typed errors of the gateway, and the one place they are mapped to HTTP.

Backends, the store and the options code raise these; the API handlers never
catch-all and re-wrap. ``handlers.BaseHandler.write_error`` renders every one of
them as ``{"error": message}`` with the status code below, which the dask-gateway
client maps to ``ValueError`` (404, 422), ``GatewayClusterError`` (409) and
``GatewayServerError`` (500).
"""


class GatewayError(Exception):
    """Base class: an error whose message is safe to show to the requesting user."""

    status_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    """The request body or query could not be understood."""

    status_code = 400


class Unauthorized(GatewayError):
    """No valid credentials were presented."""

    status_code = 401


class Forbidden(GatewayError):
    """The user is known but may not do this."""

    status_code = 403


class NotFound(GatewayError):
    """No such cluster (or route)."""

    status_code = 404


class Conflict(GatewayError):
    """The request is valid but the cluster's state or a quota refuses it."""

    status_code = 409


class InvalidOptions(GatewayError):
    """Cluster options, scale or adapt arguments failed validation."""

    status_code = 422


class Unavailable(GatewayError):
    """A dependency (the Hub, a job queue, a scheduler) did not answer."""

    status_code = 503


class BackendError(GatewayError):
    """A backend failed to start or stop something; the message is shown to the user."""

    status_code = 500


class CannotStart(GatewayError):
    """A backend cannot start this cluster as configured (a Python that does not run, an
    image that does not exist): retrying will not help, so the cluster fails at once."""

    status_code = 409


class TryLater(GatewayError):
    """A backend cannot start a worker now but may later (a namespace's ResourceQuota is
    full, the API server throttles): the worker is not counted as a failure, and the
    cluster tries again after ``retry_after`` seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after: float = 15):
        super().__init__(message)
        self.retry_after = retry_after


class StartupError(Exception):
    """The gateway must not start as configured; the message says why and what to set."""

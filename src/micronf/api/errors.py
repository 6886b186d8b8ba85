"""What can go wrong in an agent request, as exceptions the HTTP layer maps to status codes.

Each carries a message meant for the operator (it names the deployment, node or field and what
to do); the server turns them into ``{"error": kind, "detail": message}`` replies.
"""

from __future__ import annotations

from micronf.api.httperrors import ApiError


class AgentError(ApiError):
    """Base of every error the agent reports to a client."""

    kind = "agent_error"
    status = 500


class InvalidDeploymentError(AgentError, ValueError):
    """The request is well-formed JSON but cannot be deployed as asked (unknown µNF, bad wiring,
    bad backend spec, unknown exit in ``outputs``...): HTTP 400."""

    kind = "invalid_deployment"
    status = 400


class DeploymentExistsError(AgentError):
    """A deployment with this name is already running: HTTP 409."""

    kind = "exists"
    status = 409


class DeploymentNotFoundError(AgentError, KeyError):
    """No deployment has this name: HTTP 404."""

    kind = "not_found"
    status = 404

    def __str__(self) -> str:  # KeyError quotes its argument; the message is already readable
        return str(self.args[0]) if self.args else ""


class DeploymentFailedError(AgentError):
    """The deployment was valid but did not come up (a µNF failed to start, a backend could not
    open its interface); everything it had started was rolled back: HTTP 500."""

    kind = "deployment_failed"
    status = 500

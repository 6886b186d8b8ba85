"""The agent protocol: what every caller of an agent needs, whatever carries the calls.

Why a protocol of its own: the agent's HTTP layer (:mod:`micronf.agent.server`) serves these
calls, :class:`micronf.api.client.AgentClient` makes them over HTTP, and the orchestrator calls
them on whichever of the two (or an in-process :class:`micronf.agent.core.Agent`, or a test fake)
it is given. Keeping the protocol here, next to the models and errors it speaks, lets the
orchestrator type its agents without importing the FastAPI server.
"""

from __future__ import annotations

from typing import Protocol

from micronf.api.models import DeploymentInfo, DeployRequest, GraphStats, Health


class AgentCore(Protocol):
    """What the HTTP layer needs from the agent (``micronf.agent.core.Agent`` implements it).

    Every call may block (``deploy`` starts processes and can take seconds); failures are
    :class:`~micronf.api.errors.AgentError` subclasses whose ``kind``/``status`` become the reply.
    """

    def deploy(self, req: DeployRequest) -> DeploymentInfo:
        """Bring the whole deployment up or roll it back whole (InvalidDeployment/Exists/Failed)."""
        ...

    def remove(self, name: str) -> None:
        """Stop every process of the deployment and free its memory (DeploymentNotFoundError)."""
        ...

    def deployments(self) -> list[DeploymentInfo]:
        """Every deployment this agent runs."""
        ...

    def deployment(self, name: str) -> DeploymentInfo:
        """One deployment (DeploymentNotFoundError)."""
        ...

    def stats(self, name: str) -> GraphStats:
        """A snapshot of the deployment's counters (DeploymentNotFoundError)."""
        ...

    def health(self) -> Health:
        """Liveness and process counts of the agent."""
        ...

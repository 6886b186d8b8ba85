"""The southbound contract between the orchestrator (or any client) and an agent.

Both sides import it, neither is imported by it:

- :mod:`~micronf.api.models`: the request and reply models of the agent's HTTP API;
- :mod:`~micronf.api.errors`: the agent's errors (kind + HTTP status);
- :mod:`~micronf.api.protocol`: :class:`~micronf.api.protocol.AgentCore`, the calls an agent answers;
- :mod:`~micronf.api.client`: the HTTP client implementing that protocol;
- :mod:`~micronf.api.httperrors`: one JSON error shape for every HTTP app (agent and orchestrator);
- :mod:`~micronf.api.security`: the bearer-token and body-size guard of both HTTP apps;
- :mod:`~micronf.api.statedir`: where agent and orchestrator keep their tokens.
"""

"""Errors of the AI helper. All are :class:`~workflow_engine.WorkflowEngineError` subclasses."""

from __future__ import annotations

from workflow_engine.errors import WorkflowEngineError

__all__ = [
    "AIError",
    "AIResponseError",
    "MissingAPIKeyError",
    "ProviderNotInstalledError",
    "UnknownProviderError",
]


class AIError(WorkflowEngineError):
    """Base class of the AI helper's own errors (SDK errors pass through unchanged)."""


class MissingAPIKeyError(AIError):
    """A provider needs an API key and none was given or found in the environment."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        super().__init__(
            f"{provider} needs an API key: set the {env_var} environment variable "
            f"(or pass api_key= to the provider)"
        )


class ProviderNotInstalledError(AIError):
    """The SDK a provider needs is not installed."""

    def __init__(self, provider: str, package: str, extra: str) -> None:
        self.provider = provider
        super().__init__(
            f"The {provider} provider needs the {package!r} package: "
            f"pip install 'workflow-engine[{extra}]'"
        )


class UnknownProviderError(AIError):
    """No built-in provider or provider resolver serves a model."""


class AIResponseError(AIError):
    """A provider's response could not be used: malformed, empty, or not matching the schema."""

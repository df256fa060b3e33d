"""AI calls for stages: text, structured objects, embeddings, streams and provider batches.

Every call is logged through an :class:`AICallLogger` under a dot-separated topic with its
tokens and cost; inside a stage, ``ctx.ai`` is a helper already scoped to
``workflow.{run_id}.stage.{stage_id}``, and a run's totals include every call logged under
``workflow.{run_id}``. Providers (OpenAI and compatible endpoints, Anthropic, Google) use
their official SDKs, imported only when first used: ``pip install 'workflow-engine[ai]'``.
"""

from workflow_engine.ai.batch import AIBatch, BatchRequest
from workflow_engine.ai.errors import (
    AIError,
    AIResponseError,
    MissingAPIKeyError,
    ProviderNotInstalledError,
    UnknownProviderError,
)
from workflow_engine.ai.helper import AIHelper, create_ai_helper
from workflow_engine.ai.logger import AICall, AICallLogger, AICallStats, ModelStats, topic_matches
from workflow_engine.ai.models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL_KEY,
    Cost,
    ModelConfig,
    ModelRegistry,
    UnknownModelError,
    calculate_cost,
    default_registry,
    get_model,
    list_models,
    register_models,
)
from workflow_engine.ai.prompts import Prompt
from workflow_engine.ai.providers import (
    AnthropicProvider,
    GoogleProvider,
    OpenAIProvider,
    Provider,
    ProviderCache,
    ProviderResolver,
)
from workflow_engine.ai.results import (
    BatchHandle,
    BatchResult,
    BatchStatus,
    EmbedResult,
    ObjectResult,
    TextResult,
    Usage,
)
from workflow_engine.ai.streams import AsyncTextStream, TextStream

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL_KEY",
    "AIBatch",
    "AICall",
    "AICallLogger",
    "AICallStats",
    "AIError",
    "AIHelper",
    "AIResponseError",
    "AnthropicProvider",
    "AsyncTextStream",
    "BatchHandle",
    "BatchRequest",
    "BatchResult",
    "BatchStatus",
    "Cost",
    "EmbedResult",
    "GoogleProvider",
    "MissingAPIKeyError",
    "ModelConfig",
    "ModelRegistry",
    "ModelStats",
    "ObjectResult",
    "OpenAIProvider",
    "Prompt",
    "Provider",
    "ProviderCache",
    "ProviderNotInstalledError",
    "ProviderResolver",
    "TextResult",
    "TextStream",
    "UnknownModelError",
    "UnknownProviderError",
    "Usage",
    "calculate_cost",
    "create_ai_helper",
    "default_registry",
    "get_model",
    "list_models",
    "register_models",
    "topic_matches",
]

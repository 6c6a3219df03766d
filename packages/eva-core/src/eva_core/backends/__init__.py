"""Model backends behind `eva_core.policy.Policy`, and `load_policy` to pick one from a string.

- `TransformersPolicy` (transformers_backend.py): the model in this process, KV cache kept
  across an episode's turns.
- `OpenAIPolicy` (openai_backend.py): any OpenAI-compatible chat-completions server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eva_core.backends.openai_backend import (
    EndpointError,
    EndpointRequestError,
    EndpointUnavailable,
    OpenAIPolicy,
)
from eva_core.backends.transformers_backend import TransformersPolicy
from eva_core.policy import Policy

__all__ = [
    "EndpointError",
    "EndpointRequestError",
    "EndpointUnavailable",
    "OpenAIPolicy",
    "TransformersPolicy",
    "load_policy",
]


def load_policy(model: str, **options: Any) -> Policy:
    """A policy for `model`: an http(s) URL gives `OpenAIPolicy`, a local folder `TransformersPolicy`.

    Args:
        model: `http://host:port[/v1]` of an OpenAI-compatible server, or a checkpoint folder.
        **options: keyword arguments of `OpenAIPolicy(...)` or `TransformersPolicy.from_pretrained(...)`.

    Raises:
        FileNotFoundError: `model` is neither a URL nor an existing folder.
    """
    if model.startswith(("http://", "https://")):
        return OpenAIPolicy(model, **options)
    if Path(model).is_dir():
        return TransformersPolicy.from_pretrained(model, **options)
    raise FileNotFoundError(
        f"model {model!r} is neither an http(s):// URL of an OpenAI-compatible server nor a checkpoint folder"
    )

"""The policy interface: conversations in, assistant text out.

Every backend (in-process transformers, OpenAI-compatible HTTP, a scripted policy in tests)
implements `Policy.generate`. The agent loop calls it once per turn with the conversations of
all episodes still running, so a backend may batch them (transformers) or send them
concurrently (HTTP).

Messages use the Hugging Face chat format, one dict per turn:
    {"role": "system" | "user" | "assistant" | "tool",
     "content": [{"type": "text", "text": str} | {"type": "image", "image": Tensor}, ...]}
An image part holds a uint8 tensor [3, H, W] (RGB) already at the size the model must see;
backends never resize it again (the frame tool has applied the protocol's resize).

A conversation only grows within an episode: request k's messages start with request k-1's
messages plus the reply it got. `episode_id` names that lineage so that a backend can keep
state (such as a KV cache) across the turns of one episode; it must still check the prefix,
and `release` tells it an episode is over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]


@dataclass(frozen=True)
class GenerationRequest:
    """One turn of one episode.

    Attributes:
        messages: the whole conversation so far, ending with a user or tool turn.
        episode_id: stable across the turns of one episode.
    """

    messages: list[Message]
    episode_id: str = ""


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. Protocol defaults: greedy, at most 2048 new tokens a turn."""

    max_new_tokens: int = 2048
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """One assistant reply and what it cost.

    Attributes:
        text: the reply, special tokens removed.
        prompt_tokens: tokens of the prompt as the model saw it, image tokens included.
        completion_tokens: tokens generated.
        visual_tokens: image tokens inside the prompt.
        prefill_tokens: prompt tokens actually computed this turn (less than prompt_tokens when
            a KV cache from earlier turns was reused); None when the backend cannot tell.
        completion_ids: the sampled token ids, when the backend exposes them (training masks).
        seconds: wall time of this generation.
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    visual_tokens: int = 0
    prefill_tokens: int | None = None
    completion_ids: list[int] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """A model that continues conversations."""

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        """One reply per request, in order."""
        ...

    def release(self, episode_id: str) -> None:
        """Forget any state kept for an episode (it has ended)."""
        ...

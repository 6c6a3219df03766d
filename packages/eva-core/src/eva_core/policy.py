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

Training rollouts need more than text (`RolloutEngine`): token-in, token-out. A rollout
engine feeds each turn the ids it fed before, plus the ids it sampled, plus the new turns'
ids (it never re-tokenizes text it sampled), and returns them as `TurnTokens` with the
log-probability of each sampled token, so training can score exactly what was sampled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, Any]
FinishReason = Literal["stop", "length", "context"]


@dataclass(frozen=True)
class GenerationRequest:
    """One turn of one episode.

    Attributes:
        messages: the whole conversation so far, ending with a user or tool turn.
        episode_id: stable across the turns of one episode.
        sample_key: names this sample for seeded decoding, e.g. (step, prompt, sample): with
            `GenerationConfig.seed` the random numbers of each turn are drawn from a generator
            seeded by (seed, sample_key, turn), so a sample is reproducible whatever batch it
            runs in, and differs from every other key. None uses the episode id.
    """

    messages: list[Message]
    episode_id: str = ""
    sample_key: tuple[int, ...] | None = None


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. Protocol defaults: greedy, at most 2048 new tokens a turn.

    Attributes:
        max_new_tokens: sampled tokens per turn at most.
        temperature: 0 means greedy.
        top_p: nucleus mass.
        seed: seeds sampling (see `GenerationRequest.sample_key`); None draws from torch's
            global generator.
        max_context_tokens: the longest context (prompt plus reply) a backend that enforces
            it will run: a longer prompt is not run at all (`finish_reason` "context") and a
            reply stops where the context is full ("length"). None: no limit (ours; the
            protocol sets none).
    """

    max_new_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    max_context_tokens: int | None = None


@dataclass
class TurnTokens:
    """One turn, token-in and token-out: what the model was fed and what it sampled.

    The ids of a whole episode are turn 0's `prompt_ids + completion_ids`, then turn 1's, and
    so on: concatenated they are the exact sequence the model read, image placeholders
    expanded to one id per merged patch, so training needs no chat template.

    Attributes:
        prompt_ids: ids fed before sampling: on turn 0 the whole prompt; later the ids the
            template writes after the previous reply (its end-of-turn token when the reply did
            not sample one), the tool turn and the next generation prompt.
        completion_ids: the sampled ids, [N].
        completion_logprobs: [N] log-probability of each sampled id under the distribution it
            was drawn from (softmax of logits / temperature, after suppression and the top-p
            cut, renormalised; greedy turns use temperature 1). At temperature 1 and top_p 1
            this is the policy's own log-probability.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    completion_logprobs: list[float]

    def __post_init__(self):
        if len(self.completion_logprobs) != len(self.completion_ids):
            raise ValueError(f"{len(self.completion_logprobs)} log-probs for {len(self.completion_ids)} sampled ids")


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
        tokens: the ids fed and sampled, when the backend exposes them (`RolloutEngine`).
        finish_reason: "stop" (an end token), "length" (max_new_tokens or the context limit),
            "context" (the prompt alone exceeds `max_context_tokens`: nothing was run, text is
            empty); None when the backend does not say.
        seconds: wall time of this generation.
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    visual_tokens: int = 0
    prefill_tokens: int | None = None
    tokens: TurnTokens | None = None
    finish_reason: FinishReason | None = None
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


@runtime_checkable
class RolloutEngine(Policy, Protocol):
    """A policy that training samples episodes from: token-in, token-out.

    Its `generate` fills `Generation.tokens` for every request: each turn's prompt ids are the
    episode's previous ids plus the ids the template writes for the new turns (sampled text is
    never re-tokenized), and every sampled id comes with its sampling log-probability. It
    honours `GenerationRequest.sample_key` and `GenerationConfig.max_context_tokens`.

    `sync_weights` is called by the trainer after every optimizer step, before the next
    rollout. An engine in the training process that runs the training module itself
    (`TransformersPolicy`) shares its weights: the call only drops state computed with the old
    weights (cached keys and values). An engine that holds its own copy (a vLLM server or
    worker) loads the given parameters; the trainer then passes the full, gathered tensors
    under the model's Hugging Face names, so such an engine can be added without touching the
    trainer.
    """

    def sync_weights(self, named_parameters: Iterable[tuple[str, Any]] | None = None) -> None:
        """Make the next rollouts use the trainer's current weights."""
        ...

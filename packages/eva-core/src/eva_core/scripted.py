"""A policy that replays fixed replies and records what it was asked: for tests and demos.

`ScriptedPolicy(["reply 1", "reply 2"])` answers turn k of every episode with reply k;
a mapping `{episode_id: [...]}` gives each episode its own script. A script entry may also
be a whole `Generation` (to set token counts or completion ids). Every request is kept in
`requests`, every batch in `batches`, every released id in `released`.

Token counts are not a real tokenizer's, but they follow a stated rule so that tests can
check the loop's accounting: an image of H x W pixels counts (H / 28) * (W / 28) tokens (the
Qwen2.5-VL count for sides that are multiples of 28, as the frame tool makes them), a text
part one token per whitespace-separated word, the reply likewise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from eva_core.policy import Generation, GenerationConfig, GenerationRequest, Message
from eva_core.resize import PATCH

ScriptEntry = str | Generation


class ScriptExhausted(RuntimeError):
    """An episode asked for more turns than its script holds."""


def image_tokens(messages: Sequence[Message]) -> int:
    """Sum over image parts of (H / 28) * (W / 28), image [3, H, W]."""
    total = 0
    for message in messages:
        for part in message["content"] if isinstance(message["content"], list) else ():
            if part["type"] == "image":
                h, w = part["image"].shape[-2:]
                total += (h // PATCH) * (w // PATCH)
    return total


def text_tokens(messages: Sequence[Message]) -> int:
    """Whitespace-separated words of every text part (and of string contents)."""
    total = 0
    for message in messages:
        content = message["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        total += sum(len(p["text"].split()) for p in parts if p["type"] == "text")
    return total


class ScriptedPolicy:
    """Fixed replies, in order, per episode.

    Args:
        script: replies for every episode, or a mapping from episode id to its replies.
    """

    def __init__(self, script: Sequence[ScriptEntry] | Mapping[str, Sequence[ScriptEntry]]):
        self.script = script
        self.requests: list[GenerationRequest] = []
        self.batches: list[list[GenerationRequest]] = []
        self.configs: list[GenerationConfig] = []
        self.released: list[str] = []
        self._turns: defaultdict[str, int] = defaultdict(int)

    def _entries(self, episode_id: str) -> Sequence[ScriptEntry]:
        if isinstance(self.script, Mapping):
            if episode_id not in self.script:
                raise ScriptExhausted(f"no script for episode {episode_id!r}")
            return self.script[episode_id]
        return self.script

    def requests_for(self, episode_id: str) -> list[GenerationRequest]:
        """The requests one episode sent, in order."""
        return [r for r in self.requests if r.episode_id == episode_id]

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        self.batches.append(list(requests))
        self.configs.append(config)
        out = []
        for request in requests:
            self.requests.append(request)
            entries, turn = self._entries(request.episode_id), self._turns[request.episode_id]
            if turn >= len(entries):
                raise ScriptExhausted(f"episode {request.episode_id!r} asked for turn {turn + 1}; "
                                      f"the script has {len(entries)}")
            self._turns[request.episode_id] += 1
            entry = entries[turn]
            visual = image_tokens(request.messages)
            prompt = visual + text_tokens(request.messages)
            if isinstance(entry, Generation):
                out.append(entry)
            else:
                out.append(Generation(text=entry, prompt_tokens=prompt, completion_tokens=len(entry.split()),
                                      visual_tokens=visual, prefill_tokens=prompt))
        return out

    def release(self, episode_id: str) -> None:
        self.released.append(episode_id)

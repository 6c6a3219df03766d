"""Which part of a new prompt's KV cache an episode's previous turn already computed.

Within an episode the conversation only grows (`eva_core.policy`), so turn k's prompt starts
with turn k-1's prompt and reply. The token ids need not match all the way, though: the reply
was cached as the ids the model sampled, and the re-rendered prompt tokenizes the reply's text
again, which BPE may split differently; the agent may also append text to a reply (a tool call
the model did not write). So the reusable part is the longest common prefix of token ids, with
two rules for images, whose tokens are all the same placeholder id:

- an image counts as equal only if its pixels are (a fingerprint of the image), and
- the prefix never ends inside an image: Qwen2.5-VL encodes an image whole (one
  `pixel_values` block per image), so a partial image cannot be prefilled; the prefix is cut
  back to the image's first placeholder and the image is encoded again.

And at least one prompt token is always left to prefill: the next token's logits come from it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class ImageSpan:
    """The placeholder tokens of one image inside a prompt.

    Attributes:
        start: index of the first placeholder token.
        end: one past the last placeholder token.
        key: fingerprint of the image's pixels (`image_key`).
    """

    start: int
    end: int
    key: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"an image span needs 0 <= start < end, got [{self.start}, {self.end})")


def image_key(image: Any) -> str:
    """A fingerprint of an image's pixels: SHA-1 over shape, dtype and bytes.

    Args:
        image: a tensor (uint8 [3, H, W] in eva), a numpy array, a PIL image, or a path/URL
            string (fingerprinted by the string itself).
    """
    h = hashlib.sha1()
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu().contiguous()
        h.update(f"tensor{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(image, np.ndarray):
        a = np.ascontiguousarray(image)
        h.update(f"ndarray{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    elif hasattr(image, "tobytes") and hasattr(image, "size") and hasattr(image, "mode"):  # PIL
        h.update(f"pil{image.size}{image.mode}".encode())
        h.update(image.tobytes())
    else:
        h.update(f"ref:{image}".encode())
    return h.hexdigest()


def image_spans(ids: Sequence[int], image_token_id: int, keys: Sequence[str]) -> list[ImageSpan]:
    """The runs of `image_token_id` in `ids`, paired in order with the images' `keys`.

    Raises:
        ValueError: when the number of runs differs from the number of keys (two images with no
            token between them would merge into one run; Qwen's template always separates them
            with <|vision_end|><|vision_start|>).
    """
    spans: list[tuple[int, int]] = []
    start = None
    for i, tok in enumerate(ids):
        if tok == image_token_id and start is None:
            start = i
        elif tok != image_token_id and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(ids)))
    if len(spans) != len(keys):
        raise ValueError(f"{len(spans)} runs of image tokens for {len(keys)} images")
    return [ImageSpan(s, e, k) for (s, e), k in zip(spans, keys, strict=True)]


def reusable_prefix(
    cached_ids: Sequence[int],
    cached_spans: Sequence[ImageSpan],
    new_ids: Sequence[int],
    new_spans: Sequence[ImageSpan],
) -> int:
    """How many leading tokens of `new_ids` can keep the KV cache computed for `cached_ids`.

    L = the longest common prefix of the two id lists, at most len(new_ids) - 1; then, for
    the first image of the new prompt that starts before L and either ends after L or has no
    identical image (same place, same length, same pixels) in the cached prompt, L = its start.

    Args:
        cached_ids: token ids whose keys and values are in the cache.
        cached_spans: their images.
        new_ids: the new prompt's token ids.
        new_spans: its images, in order.

    Returns:
        L, 0 <= L < len(new_ids): tokens [0, L) are reused, [L, len(new_ids)) are prefilled.
    """
    limit = min(len(cached_ids), len(new_ids) - 1)
    n = 0
    while n < limit and cached_ids[n] == new_ids[n]:
        n += 1
    cached = set(cached_spans)
    for span in new_spans:
        if span.start >= n:
            break
        if span.end > n or span not in cached:
            return span.start
    return max(n, 0)


@dataclass
class EpisodeState:
    """What a backend keeps of an episode between turns.

    Attributes:
        ids: the token ids whose keys and values `kv` holds (prompt, then the sampled reply
            minus its last token, which was never fed back).
        spans: the images among `ids`.
        kv: per decoder layer, (keys, values), each [1, kv_heads, len(ids), head_dim].
    """

    ids: list[int]
    spans: list[ImageSpan]
    kv: list[tuple[torch.Tensor, torch.Tensor]]

    def __post_init__(self) -> None:
        for keys, values in self.kv:
            if keys.shape[-2] != len(self.ids) or values.shape[-2] != len(self.ids):
                raise ValueError(f"cache holds {keys.shape[-2]} positions for {len(self.ids)} ids")


@dataclass
class EpisodeStore:
    """Episode states by episode id, least recently used dropped past `capacity`."""

    capacity: int = 64
    _states: OrderedDict[str, EpisodeState] = field(default_factory=OrderedDict)

    def take(self, episode_id: str) -> EpisodeState | None:
        """Remove and return an episode's state (the caller puts back the next turn's)."""
        return self._states.pop(episode_id, None)

    def put(self, episode_id: str, state: EpisodeState) -> None:
        self._states[episode_id] = state
        self._states.move_to_end(episode_id)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def drop(self, episode_id: str) -> None:
        self._states.pop(episode_id, None)

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, episode_id: str) -> bool:
        return episode_id in self._states

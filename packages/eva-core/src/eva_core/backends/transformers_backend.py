"""In-process policy: a transformers image-text-to-text model, with KV-cache reuse across turns.

`TransformersPolicy.from_pretrained(path)` loads any `AutoModelForImageTextToText` and its
`AutoProcessor`; the released EVA checkpoint, a model trained here and the tiny test model
all take that path. Each request's conversation is rendered with the processor's chat
template and encoded with its images as they are (the frame tool has already resized them;
the processor must be configured not to resize again, see `eva_core.tiny_model`).

Decoding is a plain loop (not `model.generate`) so that one turn can start from the cache the
previous turn left:

- Prefill, one request at a time: the episode's stored cache is cropped to the reusable prefix
  (`prefix_cache.reusable_prefix`: common token prefix, never inside an image, identical
  pixels) and only the rest of the prompt is run, with `pixel_values` for the images in that
  rest only. A prompt that shares nothing is simply prefilled whole.
- Positions are computed for the whole prompt and sliced. Qwen2-VL-family models use M-RoPE:
  text after an image is not at its token index but at (largest position so far) + 1
  (`get_rope_index`); a suffix run with naive positions would be wrong. The model's own
  `get_rope_index` computes them, and decoding continues from max position + 1 (what the
  model's `rope_deltas` encode).
- Decode, the whole batch together: the rows' caches are left-padded to one length and masked.
- The cache of each episode (prompt plus sampled reply, except the last token, never fed) is
  kept for its next turn, least recently used episodes dropped past `max_cached_episodes`.

Departures from `model.generate`: only greedy and temperature/top-p sampling (the protocol's
decoding is greedy), the model's `generation_config.eos_token_id` and `suppress_tokens` are
honoured, its other processors (repetition penalty, ...) are not. Reuse needs a model whose
cache layers are all full attention and a processor that returns `image_grid_thw` (the Qwen
layout, where `pixel_values` rows can be split per image); otherwise each turn is prefilled
whole, which is still correct. Prefills run one request at a time (each has its own prefix
and images); only decoding is batched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eva_core.backends.prefix_cache import (
    EpisodeState,
    EpisodeStore,
    ImageSpan,
    image_key,
    image_spans,
    reusable_prefix,
)
from eva_core.backends.sampling import next_tokens
from eva_core.policy import Generation, GenerationConfig, GenerationRequest, Message

log = logging.getLogger(__name__)


def message_images(messages: Sequence[Message]) -> list[Any]:
    """The images of a conversation in the order the chat template places their tokens.

    A part is an image when Qwen's template says so: type "image", or an "image" or
    "image_url" key. Tensors, arrays and PIL images are taken as they are; a path or URL
    string (an "image" string, an "image_url" {"url": ...} or string) is loaded with
    transformers' `load_image`.
    """
    from transformers.image_utils import load_image

    images = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or content is None:
            continue
        for part in content:
            if part.get("type") == "image" or "image" in part:
                image = part["image"]
            elif "image_url" in part:
                image = part["image_url"]
                image = image["url"] if isinstance(image, dict) else image
            else:
                continue
            images.append(load_image(image) if isinstance(image, str) else image)
    return images


@dataclass
class _Prompt:
    """One request, encoded.

    Attributes:
        ids: long [T].
        spans: its images' placeholder runs.
        positions: long [A, T], A = 3 for M-RoPE models, 1 otherwise.
        inputs: the processor's outputs for a batch of one (pixel_values, image_grid_thw, ...).
        visual_tokens: placeholder tokens of all images.
    """

    ids: torch.Tensor
    spans: list[ImageSpan]
    positions: torch.Tensor
    inputs: dict[str, Any]
    visual_tokens: int


@dataclass
class _Row:
    """One request during decoding."""

    prompt: _Prompt
    reused: int
    cache: Any  # the model's cache object after prefill
    logits: torch.Tensor
    prefill_seconds: float


class TransformersPolicy:
    """A `Policy` over an in-process transformers model. Not thread-safe: one `generate` at a time.

    Args:
        model: an image-text-to-text model in eval mode.
        processor: its processor (chat template, tokenizer, image processor).
        reuse_kv_cache: keep each episode's cache for its next turn.
        max_cached_episodes: episodes whose cache is kept at once (LRU).
    """

    def __init__(self, model, processor, *, reuse_kv_cache: bool = True, max_cached_episodes: int = 64):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.reuse_kv_cache = reuse_kv_cache
        self.store = EpisodeStore(capacity=max_cached_episodes)
        self.device = next(model.parameters()).device
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        if not eos:
            raise ValueError("the model has no eos token: set generation_config.eos_token_id")
        self.eos_ids = sorted(set(eos))
        self.suppress = list(getattr(gen_cfg, "suppress_tokens", None) or [])
        self.image_token_id = getattr(processor, "image_token_id", None) or getattr(model.config, "image_token_id", None)
        inner = getattr(model, "model", None)
        self._rope_index = getattr(inner, "get_rope_index", None)
        self._warned_resize = False

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        reuse_kv_cache: bool = True,
        max_cached_episodes: int = 64,
        **model_kwargs: Any,
    ) -> TransformersPolicy:
        """Load model and processor with `from_pretrained(path)`.

        Args:
            path: a local checkpoint folder (or a hub id where the hub is reachable).
            dtype: "auto" (the checkpoint's), "float32", "bfloat16", ... or a torch dtype.
            device: "cpu", "cuda", "cuda:1", ...; default cuda when available, else cpu.
            attn_implementation: "sdpa", "eager", "flash_attention_2", ...
            reuse_kv_cache, max_cached_episodes: see the class.
            **model_kwargs: passed on to the model's `from_pretrained` (e.g. quantization_config).
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if attn_implementation is not None:
            model_kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, **model_kwargs)
        if "device_map" not in model_kwargs and "quantization_config" not in model_kwargs:
            model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        processor = AutoProcessor.from_pretrained(path)
        return cls(model, processor, reuse_kv_cache=reuse_kv_cache, max_cached_episodes=max_cached_episodes)

    def release(self, episode_id: str) -> None:
        self.store.drop(episode_id)

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        """One reply per request; see the module docstring for how the cache is reused."""
        if config.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {config.max_new_tokens}")
        if not requests:
            return []
        ids = [r.episode_id for r in requests if r.episode_id]
        if len(ids) != len(set(ids)):
            raise ValueError("two requests of one batch share an episode_id")
        rows = [self._prefill(r) for r in requests]
        generator = None
        if config.seed is not None and config.temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(config.seed)
        sampled, seconds, kv = self._decode(rows, config, generator)
        out = []
        for request, row, tokens, secs, row_kv in zip(requests, rows, sampled, seconds, kv, strict=True):
            if self.reuse_kv_cache and request.episode_id and row_kv is not None:
                kept = row.prompt.ids.tolist() + tokens[:-1]
                self.store.put(request.episode_id, EpisodeState(kept, row.prompt.spans, row_kv))
            n_prompt = int(row.prompt.ids.numel())
            out.append(Generation(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_tokens=n_prompt,
                completion_tokens=len(tokens),
                visual_tokens=row.prompt.visual_tokens,
                prefill_tokens=n_prompt - row.reused,
                completion_ids=list(tokens),
                seconds=row.prefill_seconds + secs,
                extra={"reused_tokens": row.reused},
            ))
        return out

    # -- encoding -------------------------------------------------------------------------------

    def _encode(self, messages: Sequence[Message]) -> _Prompt:
        text = self.processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        images = message_images(messages)
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
        ids = inputs["input_ids"][0]
        spans: list[ImageSpan] = []
        if images:
            if self.image_token_id is None:
                raise ValueError("images given but neither processor nor config names an image token")
            spans = image_spans(ids.tolist(), self.image_token_id, [image_key(im) for im in images])
        if images and "image_grid_thw" in inputs and not self._warned_resize:
            self._check_sizes(images, inputs["image_grid_thw"])
        visual = sum(s.end - s.start for s in spans)
        n = ids.numel()
        if self._rope_index is not None and images:
            positions, _ = self._rope_index(
                inputs["input_ids"],
                mm_token_type_ids=inputs.get("mm_token_type_ids"),
                image_grid_thw=inputs.get("image_grid_thw"),
                attention_mask=inputs.get("attention_mask"),
            )
            positions = positions[:, 0]
        elif self._rope_index is not None:
            positions = torch.arange(n).expand(3, n)
        else:
            positions = torch.arange(n)[None]
        return _Prompt(ids=ids, spans=spans, positions=positions, inputs=dict(inputs), visual_tokens=visual)

    def _check_sizes(self, images: list[Any], grid: torch.Tensor) -> None:
        """Warn once when the processor resized a frame (its min/max_pixels do not admit it)."""
        patch = getattr(getattr(self.processor, "image_processor", None), "patch_size", 14)
        for image, (_, gh, gw) in zip(images, grid.tolist(), strict=True):
            h, w = (image.shape[-2], image.shape[-1]) if hasattr(image, "shape") else image.size[::-1]
            if (gh * patch, gw * patch) != (h, w):
                log.warning("the processor resized a %dx%d frame to %dx%d: the protocol's frames should reach the "
                            "model unchanged; widen the image processor's size (min/max pixels), see "
                            "eva_core.tiny_model", h, w, gh * patch, gw * patch)
                self._warned_resize = True
                return

    def _image_inputs(self, prompt: _Prompt, first: int) -> dict[str, Any] | None:
        """Vision inputs for the images from index `first` on; None when their rows cannot be split."""
        inputs = prompt.inputs
        if first >= len(prompt.spans):
            return {}
        if first == 0:
            return {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        grid = inputs.get("image_grid_thw")
        if grid is None or "pixel_values" not in inputs:
            return None
        offset = int(grid[:first].prod(dim=-1).sum())
        return {"pixel_values": inputs["pixel_values"][offset:], "image_grid_thw": grid[first:]}

    # -- prefill --------------------------------------------------------------------------------

    def _prefill(self, request: GenerationRequest) -> _Row:
        from transformers import DynamicCache

        start = time.perf_counter()
        prompt = self._encode(request.messages)
        state = self.store.take(request.episode_id) if (self.reuse_kv_cache and request.episode_id) else None
        reused = 0
        if state is not None:
            reused = reusable_prefix(state.ids, state.spans, prompt.ids.tolist(), prompt.spans)
        first_new = next((i for i, s in enumerate(prompt.spans) if s.start >= reused), len(prompt.spans))
        vision = self._image_inputs(prompt, first_new)
        if vision is None:  # pixel rows not splittable per image: prefill everything
            reused, first_new = 0, 0
            vision = self._image_inputs(prompt, 0)
        if reused:
            cache = DynamicCache(ddp_cache_data=[(k[:, :, :reused], v[:, :, :reused]) for k, v in state.kv])
        else:
            cache = DynamicCache(config=self.model.config)
        n = prompt.ids.numel()
        out = self.model(
            input_ids=prompt.ids[None, reused:].to(self.device),
            attention_mask=torch.ones(1, n, dtype=torch.long, device=self.device),
            position_ids=self._positions(prompt.positions[:, None, reused:]),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **{k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in vision.items()},
        )
        return _Row(prompt, reused, out.past_key_values, out.logits[0, -1], time.perf_counter() - start)

    def _positions(self, pos: torch.Tensor) -> torch.Tensor:
        """[A, B, n] positions as the model takes them: [3, B, n] for M-RoPE, [B, n] otherwise."""
        pos = pos.to(self.device)
        return pos if self._rope_index is not None else pos[0]

    # -- decode ---------------------------------------------------------------------------------

    def _decode(self, rows: list[_Row], config: GenerationConfig, generator):
        """Decode all rows together; returns sampled ids, decode seconds and each row's cache.

        A batch of one decodes on its prefill cache; a larger batch stitches the rows' caches
        left-padded into one, or, when a cache is not plain tensors, decodes row by row.
        """
        from transformers import DynamicCache

        batch, lengths = len(rows), [r.prompt.ids.numel() for r in rows]
        longest = max(lengths)
        pads = [longest - n for n in lengths]
        if batch == 1:
            cache = rows[0].cache
        else:
            per_row = [_cache_tensors(r.cache) for r in rows]
            if not all(per_row):
                parts = [self._decode([r], config, generator) for r in rows]
                return tuple([part[i][0] for part in parts] for i in range(3))
            layers = []
            for layer in range(len(per_row[0])):
                keys = torch.cat([_left_pad(kv[layer][0], p) for kv, p in zip(per_row, pads, strict=True)])
                values = torch.cat([_left_pad(kv[layer][1], p) for kv, p in zip(per_row, pads, strict=True)])
                layers.append((keys, values))
            cache = DynamicCache(ddp_cache_data=layers)
        mask = torch.ones(batch, longest, dtype=torch.long, device=self.device)
        for b, p in enumerate(pads):
            mask[b, :p] = 0
        next_pos = torch.stack([r.prompt.positions.max() + 1 for r in rows]).to(self.device)  # [B]
        logits = torch.stack([r.logits for r in rows])
        sampled: list[list[int]] = [[] for _ in rows]
        done = [False] * batch
        seconds = [0.0] * batch
        start = time.perf_counter()
        eos = set(self.eos_ids)
        for step in range(config.max_new_tokens):
            tokens = next_tokens(logits, temperature=config.temperature, top_p=config.top_p,
                                 suppress=self.suppress, generator=generator)
            for b, tok in enumerate(tokens.tolist()):
                if done[b]:
                    continue
                sampled[b].append(tok)
                if tok in eos or len(sampled[b]) >= config.max_new_tokens:
                    done[b] = True
                    seconds[b] = time.perf_counter() - start
            if all(done):
                break
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            pos = (next_pos + step).view(1, batch, 1).expand(3 if self._rope_index is not None else 1, -1, -1)
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=self._positions(pos),
                             past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1]
        kv_rows: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
        full = _cache_tensors(cache)
        for b, (p, n) in enumerate(zip(pads, lengths, strict=True)):
            keep = n + len(sampled[b]) - 1  # the last sampled token was never fed
            kv_rows.append([(k[b:b + 1, :, p:p + keep].clone(), v[b:b + 1, :, p:p + keep].clone()) for k, v in full]
                           if self.reuse_kv_cache and full else None)
        return sampled, seconds, kv_rows


def _cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of a DynamicCache; [] when a layer is not plain full attention."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", [])
    if not layers or any(type(layer) is not DynamicLayer or layer.keys is None for layer in layers):
        return []
    return [(layer.keys, layer.values) for layer in layers]


def _left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """[B, H, T, D] -> [B, H, n + T, D] with n zero positions in front."""
    if n == 0:
        return t
    return torch.cat([t.new_zeros(*t.shape[:2], n, t.shape[-1]), t], dim=2)

"""In-process policy and rollout engine: a transformers image-text-to-text model, with KV-cache
reuse across turns and prefill sharing across the samples of one prompt.

`TransformersPolicy.from_pretrained(path)` loads any `AutoModelForImageTextToText` and its
`AutoProcessor`; the released EVA checkpoint, a model trained here and the tiny test model
all take that path. A training module passes its own model (peft-wrapped, FSDP2-sharded or
not) to `TransformersPolicy(model, processor)`: the engine then shares its weights
(`sync_weights` only drops caches), leaves its train/eval modes as it found them after each
call, and finds `get_rope_index` through the wrappers (`token_context.find_rope_index`).

Prompts are token-in, token-out (`token_context`): turn k's ids are turn k-1's ids plus the
sampled reply plus the new turns' ids, and each `Generation.tokens` returns the ids fed, the
ids sampled and their sampling log-probabilities (`eva_core.policy.RolloutEngine`). The
frame tool has already resized the images; the processor must be configured not to resize
again (see `eva_core.tiny_model`).

Decoding is a plain loop (not `model.generate`) so that one turn can start from the cache the
previous turn left:

- Prefill, one distinct prompt at a time: the episode's stored cache is cropped to the
  reusable prefix (`prefix_cache.reusable_prefix`: common token prefix, never inside an
  image, identical pixels) and only the rest of the prompt is run, with `pixel_values` for
  the images in that rest only. Requests of one batch whose prompts are identical (the G
  samples of a GRPO group on their first turn) are prefilled once and share the result.
- Positions are computed for the whole prompt and sliced. Qwen2-VL-family models use M-RoPE:
  text after an image is not at its token index but at (largest position so far) + 1
  (`get_rope_index`); a suffix run with naive positions would be wrong. Decoding continues
  from max position + 1 (what the model's `rope_deltas` encode).
- Decode, the whole batch together: the rows' caches are left-padded to one length and
  masked. Each row samples from its own generator, seeded by (seed, sample key, turn)
  (`sampling.sample_seed`), so a sample is the same alone or batched and differs per key.
- The cache of each episode (prompt plus sampled reply, except the last token, never fed) is
  kept for its next turn, least recently used episodes dropped past `max_cached_episodes`.

`GenerationConfig.max_context_tokens` is enforced: a prompt that leaves no room for one token
is not run (`finish_reason` "context"), and a reply stops where the context is full.

Departures from `model.generate`: only greedy and temperature/top-p sampling (the protocol's
decoding is greedy), the model's `generation_config.eos_token_id` and `suppress_tokens` are
honoured, its other processors (repetition penalty, ...) are not. Reuse needs a model whose
cache layers are all full attention and a processor that returns `image_grid_thw` (the Qwen
layout, where `pixel_values` rows can be split per image); otherwise each turn is prefilled
whole, which is still correct. Only decoding is batched.

Under FSDP2 every forward all-gathers parameters, so rank-local rollouts of different lengths
would make different numbers of collective calls; run them inside
`eva_train.model.sharding.gathered_for_rollouts`, which gathers the parameters once, so that
rollouts make no collective call at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from eva_core.backends.prefix_cache import EpisodeState, EpisodeStore, reusable_prefix
from eva_core.backends.sampling import sample_rows, sample_seed
from eva_core.backends.token_context import (
    EncodedPrompt,
    EpisodeTokens,
    encode_prompt,
    find_rope_index,
    message_images,
    vision_inputs,
)
from eva_core.policy import Generation, GenerationConfig, GenerationRequest, TurnTokens
from eva_core.vision_attention import use_grouped_vision_attention

log = logging.getLogger(__name__)

__all__ = ["TransformersPolicy", "message_images"]


@dataclass
class _Row:
    """One request during decoding.

    Attributes:
        prompt: the encoded request.
        reused: prompt tokens whose keys and values came from a cache (a shared group prefill
            counts the whole prompt).
        cache: the model's cache object after prefill (shared by the rows of a group).
        logits: [V] next-token logits after the prompt.
        prefill_seconds: time of the prefill (0 for a row that shared another's).
        max_new: most tokens this row may sample (max_new_tokens, or the room left in the context).
        generator: the row's sampling generator, or None.
    """

    prompt: EncodedPrompt
    reused: int
    cache: Any
    logits: torch.Tensor
    prefill_seconds: float
    max_new: int
    generator: torch.Generator | None


@contextmanager
def _inference_modes(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the duration, then every module's own mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class TransformersPolicy:
    """A `RolloutEngine` over an in-process transformers model. Not thread-safe: one `generate` at a time.

    Args:
        model: an image-text-to-text model (its train/eval modes are restored after each call).
        processor: its processor (chat template, tokenizer, image processor).
        reuse_kv_cache: keep each episode's cache for its next turn.
        max_cached_episodes: episodes whose cache is kept at once (LRU).
        share_prefill: prefill identical prompts of one batch once.
        token_in: continue each episode from its own ids (`token_context`; needed for training
            rollouts, which get `Generation.tokens`). False renders and tokenizes the whole
            conversation every turn, as an OpenAI-compatible server does (text-level parity
            with one, e.g. when a caller edits replies); `Generation.tokens` is then None.

    Raises:
        ValueError: the model has no eos token, or uses M-RoPE without exposing `get_rope_index`.
    """

    def __init__(self, model, processor, *, reuse_kv_cache: bool = True, max_cached_episodes: int = 64,
                 share_prefill: bool = True, token_in: bool = True):
        self.model = model
        self.token_in = token_in
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.reuse_kv_cache = reuse_kv_cache
        self.share_prefill = share_prefill
        self.store = EpisodeStore(capacity=max_cached_episodes)
        self.tokens: dict[str, EpisodeTokens] = {}  # dropped by `release` only: training needs every turn
        self.device = next(model.parameters()).device
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        if not eos:
            raise ValueError("the model has no eos token: set generation_config.eos_token_id")
        self.eos_ids = sorted(set(eos))
        self.end_tokens = self.tokenizer.convert_ids_to_tokens(self.eos_ids)
        self.suppress = list(getattr(gen_cfg, "suppress_tokens", None) or [])
        self.image_token_id = getattr(processor, "image_token_id", None) or getattr(model.config, "image_token_id", None)
        self._rope_index = find_rope_index(model)
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
        token_in: bool = True,
        **model_kwargs: Any,
    ) -> TransformersPolicy:
        """Load model and processor with `from_pretrained(path)`.

        Args:
            path: a local checkpoint folder (or a hub id where the hub is reachable).
            dtype: "auto" (the checkpoint's), "float32", "bfloat16", ... or a torch dtype.
            device: "cpu", "cuda", "cuda:1", ...; default cuda when available, else cpu.
            attn_implementation: "sdpa", "eager", "flash_attention_2", ...
            reuse_kv_cache, max_cached_episodes, token_in: see the class.
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
        use_grouped_vision_attention(model)  # same outputs, one sdpa call per window length (tested)
        processor = AutoProcessor.from_pretrained(path)
        return cls(model.eval(), processor, reuse_kv_cache=reuse_kv_cache, max_cached_episodes=max_cached_episodes,
                   token_in=token_in)

    def release(self, episode_id: str) -> None:
        self.store.drop(episode_id)
        self.tokens.pop(episode_id, None)

    def sync_weights(self, named_parameters: Iterable[tuple[str, Any]] | None = None) -> None:
        """The engine runs the training module itself: drop the caches computed with the old weights.

        Raises:
            ValueError: parameters were passed (this engine has no copy of its own to load them into).
        """
        if named_parameters is not None:
            raise ValueError("TransformersPolicy shares the training module's weights: call sync_weights() without "
                             "parameters")
        self.store = EpisodeStore(capacity=self.store.capacity)

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
        with _inference_modes(self.model):
            return self._generate(requests, config)

    def _generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        out: list[Generation | None] = [None] * len(requests)
        rows: dict[int, _Row] = {}
        groups: dict[tuple, _Row] = {}
        for i, request in enumerate(requests):
            start = time.perf_counter()
            prompt = self._encode(request)
            n = prompt.ids.numel()
            room = config.max_new_tokens if config.max_context_tokens is None else config.max_context_tokens - n
            if room < 1:
                out[i] = Generation(text="", prompt_tokens=n, visual_tokens=prompt.visual_tokens, prefill_tokens=0,
                                    finish_reason="context", seconds=time.perf_counter() - start)
                continue
            generator = None
            if config.seed is not None and config.temperature > 0:
                turn = sum(m.get("role") == "assistant" for m in request.messages)
                key = request.sample_key if request.sample_key is not None else request.episode_id
                generator = torch.Generator(device=self.device).manual_seed(sample_seed(config.seed, key, turn))
            group = (tuple(prompt.ids.tolist()), tuple(s.key for s in prompt.spans)) if self.share_prefill else None
            if group in groups:  # the same prompt was prefilled for an earlier row of this batch
                first = groups[group]
                rows[i] = _Row(prompt, n, first.cache, first.logits, time.perf_counter() - start,
                               min(config.max_new_tokens, room), generator)
                continue
            rows[i] = self._prefill(request, prompt, start, min(config.max_new_tokens, room), generator)
            if group is not None and _cache_tensors(rows[i].cache):
                groups[group] = rows[i]
        order = sorted(rows)
        sampled, logprobs, seconds, kv = self._decode([rows[i] for i in order], config) if order else ([], [], [], [])
        for i, tokens, logps, secs, row_kv in zip(order, sampled, logprobs, seconds, kv, strict=True):
            request, row = requests[i], rows[i]
            n_prompt = int(row.prompt.ids.numel())
            if request.episode_id and self.token_in:
                self.tokens[request.episode_id] = EpisodeTokens(
                    ids=row.prompt.ids.tolist() + tokens, messages=len(request.messages) + 1,
                    keys=[s.key for s in row.prompt.spans],
                    grids=[] if row.prompt.grids is None else row.prompt.grids.tolist(), last_token=tokens[-1])
            if self.reuse_kv_cache and request.episode_id and row_kv is not None:
                kept = row.prompt.ids.tolist() + tokens[:-1]
                self.store.put(request.episode_id, EpisodeState(kept, row.prompt.spans, row_kv))
            out[i] = Generation(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_tokens=n_prompt,
                completion_tokens=len(tokens),
                visual_tokens=row.prompt.visual_tokens,
                prefill_tokens=n_prompt - row.reused,
                tokens=TurnTokens(prompt_ids=row.prompt.ids[row.prompt.new_from:].tolist(), completion_ids=tokens,
                                  completion_logprobs=logps) if self.token_in else None,
                finish_reason="stop" if tokens[-1] in self.eos_ids else "length",
                seconds=row.prefill_seconds + secs,
                extra={"reused_tokens": row.reused},
            )
        return out

    # -- encoding -------------------------------------------------------------------------------

    def _encode(self, request: GenerationRequest) -> EncodedPrompt:
        before = self.tokens.get(request.episode_id) if request.episode_id else None
        prompt = encode_prompt(self.processor, request.messages, before, image_token_id=self.image_token_id,
                               rope_index=self._rope_index, end_tokens=self.end_tokens)
        if prompt.pixel_values is not None and not self._warned_resize:
            self._check_sizes(prompt.images[prompt.pixels_from:], prompt.grids[prompt.pixels_from:])
        return prompt

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

    # -- prefill --------------------------------------------------------------------------------

    def _prefill(self, request: GenerationRequest, prompt: EncodedPrompt, start: float, max_new: int,
                 generator: torch.Generator | None) -> _Row:
        from transformers import DynamicCache

        state = self.store.take(request.episode_id) if (self.reuse_kv_cache and request.episode_id) else None
        reused = 0
        if state is not None:
            reused = reusable_prefix(state.ids, state.spans, prompt.ids.tolist(), prompt.spans)
        first_new = next((i for i, s in enumerate(prompt.spans) if s.start >= reused), len(prompt.spans))
        vision = vision_inputs(self.processor, prompt, first_new)
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
            **{k: v.to(self.device) for k, v in vision.items()},
        )
        return _Row(prompt, reused, out.past_key_values, out.logits[0, -1], time.perf_counter() - start, max_new,
                    generator)

    def _positions(self, pos: torch.Tensor) -> torch.Tensor:
        """[A, B, n] positions as the model takes them: [3, B, n] for M-RoPE, [B, n] otherwise."""
        pos = pos.to(self.device)
        return pos if self._rope_index is not None else pos[0]

    # -- decode ---------------------------------------------------------------------------------

    def _decode(self, rows: list[_Row], config: GenerationConfig):
        """Decode all rows together; returns sampled ids, their log-probs, decode seconds and each row's cache.

        A batch of one decodes on its prefill cache; a larger batch stitches the rows' caches
        left-padded into one (rows of a shared prefill are copied, i.e. expanded, here), or,
        when a cache is not plain tensors, decodes row by row.
        """
        from transformers import DynamicCache

        batch, lengths = len(rows), [r.prompt.ids.numel() for r in rows]
        longest = max(lengths)
        pads = [longest - n for n in lengths]
        if batch == 1:
            cache = rows[0].cache
        else:
            per_row = [_cache_tensors(r.cache) for r in rows]
            if not all(per_row):  # never shared (only plain caches are), so each row may extend its own
                parts = [self._decode([r], config) for r in rows]
                return tuple([part[i][0] for part in parts] for i in range(4))
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
        generators = [r.generator for r in rows]
        sampled: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        done = [False] * batch
        seconds = [0.0] * batch
        start = time.perf_counter()
        eos = set(self.eos_ids)
        for step in range(max(r.max_new for r in rows)):
            tokens, logps = sample_rows(logits, temperature=config.temperature, top_p=config.top_p,
                                        suppress=self.suppress, generators=generators)
            for b, (tok, logp) in enumerate(zip(tokens.tolist(), logps.tolist(), strict=True)):
                if done[b]:
                    continue
                sampled[b].append(tok)
                logprobs[b].append(logp)
                if tok in eos or len(sampled[b]) >= rows[b].max_new:
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
        return sampled, logprobs, seconds, kv_rows


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

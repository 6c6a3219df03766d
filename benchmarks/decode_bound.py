"""Rollout decoding against its memory-bandwidth bound: the decode half of `benchmarks/gpu_stages.py`.

Imported by that script (no command line of its own). A decode step reads every weight once
whatever the batch, so steps/s <= bandwidth / bytes a step reads, until the batch makes the step
compute-bound. `run_decode` measures decode steps/s of each variant at each batch, after a
prompt of `--decode-context` tokens, with a fixed number of new tokens:

- `eva`: `TransformersPolicy.generate`, the rollout engine, its end tokens suppressed so every
  reply is as long as asked: new + 1 tokens make `new` decode steps, timed around the engine's
  `_decode` (`PhaseTimer`), best of `--decode-repeats` after a warm-up. Requests come in groups
  of G identical prompts sharing their prefill, as GRPO's first turn.
- `eva-lora`: the same over the GRPO recipe's LoRA adapters, unmerged, as GRPO samples.
- `generate`, `generate-static`, `generate-static-compile`: transformers' `model.generate` as
  reference points, since `TransformersPolicy` decodes in its own loop over a `DynamicCache`
  and takes neither a static cache nor a compiled forward: the dynamic cache; a static cache
  (`cache_implementation="static"`, compilation off); and the static cache with transformers'
  automatic `torch.compile` of the decoding forward (CUDA graphs), its first call's time, the
  compilation, recorded. Steps/s from the arrival of the first sampled tokens to the last.

Each row: steps/s, tokens/s (x batch), `bound_weights` = bandwidth / weight bytes (the decoder
and the output head; not the vision tower or the input embedding, which a step reads one row
of), `bound_kv` = bandwidth / (weights + the KV cache a step reads at the batch's mean
context), and steps/s as shares of both.
"""

from __future__ import annotations

import math
import time
import traceback

import torch
from gpu_train import Results, free, sync, text

VARIANTS = ("eva", "generate", "generate-static", "eva-lora", "generate-static-compile")
COMPILED = "generate-static-compile"
QUESTION = "What does {} do in the video? A. moves B. stays"
SUBJECTS = ("a dog", "a car", "a door", "a bird", "a ball", "a cup", "a lamp", "a boat")


def decode_bytes(model) -> tuple[int, int]:
    """(weight bytes a decode step reads, KV-cache bytes per token of context)."""
    from eva_train.model.loading import base_model, vision_modules

    inner = base_model(model)
    visual, _ = vision_modules(inner)
    embed, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    skip = {id(p) for p in visual.parameters()} if visual is not None else set()
    if head is None or head.weight is not embed.weight:
        skip.add(id(embed.weight))
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)
    cfg = inner.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return weights, cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * embed.weight.element_size()


def decode_prompts(processor, count: int, context: int) -> list[list[dict]]:
    """`count` distinct opening conversations (`eva_core.protocol.opening_turns`) padded with
    words to about `context` tokens each."""
    from eva_core.protocol import opening_turns

    def messages(p: int, words: int) -> list[dict]:
        return opening_turns(QUESTION.format(SUBJECTS[p % len(SUBJECTS)]) + " " + text(p, words))

    def length(m) -> int:
        rendered = processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
        return len(processor.tokenizer(rendered)["input_ids"])

    base, hundred = length(messages(0, 0)), length(messages(0, 100))
    words = max(0, round((context - base) * 100 / max(1, hundred - base)))
    return [messages(p, words) for p in range(count)]


class PhaseTimer:
    """Seconds spent in chosen methods of an object, by phase: the outermost call of each is
    timed, the device synchronised around it (`_decode` calls itself row by row for caches it
    cannot stitch). Wrapping private methods is this benchmark's instrument, not an interface."""

    def __init__(self, device: str) -> None:
        self.device, self.seconds, self._depth = device, {}, 0

    def wrap(self, obj, method: str, phase: str) -> None:
        inner = getattr(obj, method)
        self.seconds[phase] = 0.0

        def timed(*args, **kwargs):
            outer = self._depth == 0
            if outer:
                sync(self.device)
                start = time.perf_counter()
            self._depth += 1
            try:
                return inner(*args, **kwargs)
            finally:
                self._depth -= 1
                if outer:
                    sync(self.device)
                    self.seconds[phase] += time.perf_counter() - start

        setattr(obj, method, timed)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


def eva_rate(engine, timer: PhaseTimer, prompts: list, group: int, batch: int, args) -> dict:
    """Decode steps/s of `engine.generate` on `batch` requests in groups of `group`: new + 1
    tokens make `new` decode forwards, timed around the engine's `_decode` (best of repeats)."""
    from eva_core.policy import GenerationConfig, GenerationRequest

    new = args.decode_new_tokens
    config = GenerationConfig(max_new_tokens=new + 1, temperature=1.0, seed=0)
    best = {"decode": math.inf, "prefill": math.inf}
    for k in range(1 + args.decode_repeats):  # the first is a warm-up
        requests = [GenerationRequest(prompts[i // group], episode_id=f"d{k}-{i}", sample_key=(0, i // group, i % group))
                    for i in range(batch)]
        timer.reset()
        out = engine.generate(requests, config)
        for r in requests:
            engine.release(r.episode_id)
        if any(g.completion_tokens != new + 1 for g in out):
            raise RuntimeError(f"a reply ended before {new + 1} tokens")
        if k:
            best = {p: min(best[p], timer.seconds[p]) for p in best}
    return {"steps_per_s": new / best["decode"], "prefill_s": best["prefill"],
            "context": sum(g.prompt_tokens for g in out) / batch}


class Stamps:
    """A `generate` streamer noting when each step's tokens arrive (the first call brings the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def generate_rate(model, processor, prompts: list, batch: int, variant: str, args) -> dict:
    """Decode steps/s of `model.generate` on `batch` prompts (left-padded)."""
    from transformers import CompileConfig

    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    texts = [processor.apply_chat_template(prompts[i % len(prompts)], add_generation_prompt=True, tokenize=False)
             for i in range(batch)]
    inputs = tokenizer(texts, return_tensors="pt", padding=True).to(args.device)
    new = args.decode_new_tokens + 1
    kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": True, "temperature": 1.0, "top_k": 0,
              "top_p": 1.0, "pad_token_id": tokenizer.pad_token_id}
    if variant != "generate":
        kwargs |= {"cache_implementation": "static", "disable_compile": variant != COMPILED}
    if variant == COMPILED and args.device != "cuda":
        kwargs["compile_config"] = CompileConfig()
        kwargs["compile_config"]._compile_all_devices = True  # transformers compiles on CUDA only by default
    sync(args.device)
    start = time.perf_counter()
    model.generate(**inputs, **kwargs)  # warm-up (and compilation)
    first = time.perf_counter() - start
    best = math.inf
    for _ in range(args.decode_repeats):
        stamps = Stamps()
        model.generate(**inputs, **kwargs, streamer=stamps)
        best = min(best, (stamps.times[-1] - stamps.times[1]) / (len(stamps.times) - 2))
    return {"steps_per_s": 1 / best, "first_call_s": first, "context": int(inputs["input_ids"].shape[1])}


def run_decode(results: Results, folder, variants: list[str], *, batches: list[int], group: int, lora: dict,
               args, ctx: dict, deadline: float) -> None:
    """One `decode` row per variant and batch (`COMPILED` at `args.compile_batches` only); rows
    that would start after `deadline` are recorded as skipped.

    Args:
        batches: decode batch sizes.
        group: G, requests sharing a prompt.
        lora: the GRPO recipe's `lora` settings (`eva-lora`).
    """
    from eva_core.backends import TransformersPolicy
    from eva_train.model.loading import LoraSpec, add_lora

    engine = TransformersPolicy.from_pretrained(str(folder), device=args.device, reuse_kv_cache=False,
                                                dtype="bfloat16" if args.device == "cuda" else "float32")
    prompts = decode_prompts(engine.processor, max(1, max(batches) // group), args.decode_context)
    bandwidth = ctx["copy_bandwidth_gbs"] * 1e9
    for variant in [v for v in VARIANTS if v in variants]:  # eva-lora wraps the model: after the plain ones
        model = add_lora(engine.model, LoraSpec(**lora)).eval() if variant == "eva-lora" else engine.model
        policy = TransformersPolicy(model, engine.processor, reuse_kv_cache=False)
        policy.suppress = sorted(set(policy.suppress) | set(policy.eos_ids))  # replies of exactly the asked length
        timer = PhaseTimer(args.device)
        timer.wrap(policy, "_prefill", "prefill")
        timer.wrap(policy, "_decode", "decode")
        weights, kv_token = decode_bytes(model)
        for batch in args.compile_batches if variant == COMPILED else batches:
            row = {"kind": "decode", "variant": variant, "batch": batch, "new_tokens": args.decode_new_tokens,
                   "weight_bytes": weights}
            if time.perf_counter() > deadline:
                results.add(row | {"skipped": "time budget"})
                continue
            try:
                if variant.startswith("eva"):
                    row |= eva_rate(policy, timer, prompts, group, batch, args)
                else:
                    row |= generate_rate(model, engine.processor, prompts, batch, variant, args)
                kv = batch * (row["context"] + args.decode_new_tokens / 2) * kv_token
                row |= {"kv_bytes": kv, "bound_weights": bandwidth / weights, "bound_kv": bandwidth / (weights + kv),
                        "share_weights": row["steps_per_s"] * weights / bandwidth,
                        "share_kv": row["steps_per_s"] * (weights + kv) / bandwidth,
                        "tokens_per_s": row["steps_per_s"] * batch}
            except Exception as err:
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {err}"[:400]
            results.add(row)
            free(args.device)
    del engine, policy, model
    if COMPILED in variants:
        torch._dynamo.reset()  # compiled graphs hold the model's weights (and CUDA graphs their pool)
    free(args.device)

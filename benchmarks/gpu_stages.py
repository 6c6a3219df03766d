"""SFT, KTO and GRPO at the Qwen2.5-VL-7B shape on one GPU, and rollout decoding against its memory-bandwidth bound.

    python benchmarks/gpu_stages.py --out DIR                     # on a GPU (sized for < 8 minutes)
    uv run python benchmarks/gpu_stages.py --tiny --out /tmp/gs   # dry run on CPU, the tiny model

The model is built once from its published config with random bf16 weights
(`gpu_train.build_model_folder`: the tiny tokenizer, nothing downloaded); every run then loads
it as its recipe does. Each result is printed and appended to DIR/gpu_stages.jsonl as it comes;
an error (out of memory, say) is recorded in its row and the run goes on; what would start after
`--budget-s` is recorded as skipped. In this order, most wanted first:

1. `context`: the device, the bf16 matrix-product rate (the MFU denominator) and the memory
   bandwidth of a 4 GiB device-to-device copy (bytes read + written / s).
2. `decode` rows (`benchmarks/decode_bound.py`): decode steps/s of the rollout engine
   (`TransformersPolicy`, with and without the GRPO recipe's LoRA adapters) and of
   transformers' `model.generate` (dynamic cache, static cache) at batches 1, 8, 32 and each
   GRPO recipe's G x prompts a rank, against bandwidth / bytes a step reads.
3. One run per recipe (`configs/*-7b-{lora,fsdp}.yaml`, read with yaml, the model path
   replaced), in `RUNS` order: the recipe's LightningModule and trainer settings (precision,
   gradient clipping and accumulation), `--steps` optimizer steps; FSDP recipes under
   `ModelParallelStrategy(data_parallel_size=1)` on one device, not started when their state
   (`state_gib`) exceeds the device's memory. A `stage-step` row as each optimizer step ends
   (seconds, tokens/s, MFU, peak GiB so far), then a `stage` row (the last step's figures).
   - SFT and KTO train on protocol-shaped conversations of `--tokens` tokens (one 448-token
     frame per 512, `gpu_train.conversation_sample`), the recipe's rows per batch (KTO at least
     2, which its KL pairs need: `kto-fsdp` takes 2 at world size 1). `kto-lora` uses the
     recipe's reference (the base under disabled adapters) and, before its first step, writes
     its batch's reference log-probs with `precompute_reference`; `kto-lora-precomputed` trains
     against them (`reference.kind: precomputed`).
   - GRPO plays the recipe's G samples of `--grpo-prompts` prompts (default: the recipe's
     prompts_per_step) on a generated video, `--grpo-turns` turns of `--grpo-new-tokens`
     tokens. A random model never writes a valid call, so each reply gets a frame_select call
     appended (`AppendToolCall`) and every episode runs to the turn limit; such episodes are
     truncated, so `loss.mask_truncated` is off (training costs what it costs on real ones).
     The module logs the split (`train/rollout_s`, `tool_s`, `reward_s`, `train_s`); the
     engine's prefill and decode are timed around its `_prefill` and `_decode` (private names:
     this benchmark's instrument, not an interface).
4. `decode` rows of `generate-static-compile` (compilation is the slowest part), then the QLoRA
   and FSDP runs.

MFU = model FLOPs / s / product rate: a frozen-base LoRA step costs 6 N FLOPs a token (forward,
recomputed forward, activation gradients), full fine-tuning 8 N (and weight gradients), a
no-grad forward 2 N; N = the base's parameters, vision tower included (as `gpu_train.py`);
attention's quadratic term is not counted.

`--tiny` runs all of it on the tiny model on CPU with small sizes: a dry run of the code paths,
whose figures say nothing about a GPU. On CPU the weights load in float32 and trainers run
"32-true" (bf16 matrix products are ~30x slower than float32 on the development CPU), and
4-bit QLoRA, which needs CUDA, is skipped.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import lightning as L
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_train  # noqa: E402  (the sibling benchmark: model folder, conversations, results file)
from decode_bound import (  # noqa: E402
    COMPILED,
    QUESTION,
    SUBJECTS,
    VARIANTS,
    PhaseTimer,
    decode_bytes,
    run_decode,
)
from gpu_train import Repeat, Results, free, sync  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUNS = {  # name: (recipe, quantization, reference override), in the order they run
    "sft-lora": ("sft-7b-lora", "none", None),
    "kto-lora": ("kto-7b-lora", "none", None),
    "kto-lora-precomputed": ("kto-7b-lora", "none", "precomputed"),
    "grpo-lora": ("grpo-7b-lora", "none", None),
    "grpo-qlora": ("grpo-7b-lora", "4bit", None),
    "kto-qlora": ("kto-7b-lora", "4bit", None),
    "sft-fsdp": ("sft-7b-fsdp", "none", None),
    "grpo-fsdp": ("grpo-7b-fsdp", "none", None),
    "kto-fsdp": ("kto-7b-fsdp", "none", None),
}


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Bytes read + written per second by a device-to-device copy of `nbytes`."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    sync(device)
    return 2 * nbytes * reps / (time.perf_counter() - start)


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def error_text(err: BaseException) -> str:
    traceback.print_exc()
    return f"{type(err).__name__}: {err}"[:400]


# ---- recipes ------------------------------------------------------------------------------------

def recipe(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def build_module(cfg: dict, folder: Path, quantization: str, overrides: dict):
    """The recipe's LightningModule with its init args as typed specs; `overrides` update them by key."""
    from eva_data.rewards import RewardConfig
    from eva_train.model.loading import LoraSpec, ModelSpec
    from eva_train.model.optim import OptimSpec
    from eva_train.model.sharding import ShardingSpec
    from eva_train.objectives.reference import ReferenceSpec
    from eva_train.stages.grpo import GRPOLossSpec, RolloutSpec

    specs = {"model": ModelSpec, "lora": LoraSpec, "optim": OptimSpec, "sharding": ShardingSpec,
             "reference": ReferenceSpec, "rollout": RolloutSpec, "loss": GRPOLossSpec, "reward": RewardConfig}
    module_name, _, class_name = cfg["model"]["class_path"].rpartition(".")
    args = copy.deepcopy(cfg["model"]["init_args"])
    args["model"] |= {"path": str(folder), "quantization": quantization}
    for key, value in overrides.items():
        args[key] = {**args.get(key, {}), **value}
    kwargs = {k: specs[k](**v) if k in specs else v for k, v in args.items()}
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


def make_trainer(cfg: dict, device: str, steps: int, callbacks: list) -> L.Trainer:
    """The recipe's trainer settings on one device; an FSDP recipe keeps its strategy at world size 1."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    t = cfg["trainer"]
    strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1) if "strategy" in t else "auto"
    return L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, strategy=strategy,
                     precision=t["precision"] if device == "cuda" else "32-true",
                     accumulate_grad_batches=t.get("accumulate_grad_batches", 1),
                     gradient_clip_val=t.get("gradient_clip_val"), max_steps=steps, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, callbacks=callbacks)


def model_size(module) -> tuple[int, bool]:
    """(N, whether the base trains): N = the base's parameters, without LoRA's."""
    from eva_train.model.loading import count_parameters

    counts = count_parameters(module.policy)
    lora = module.lora_spec is not None
    return (counts.total - counts.trainable if lora else counts.total), not lora


class StepClock(L.Callback):
    """Times each optimizer step (from the end of the previous one) and emits a `stage-step` row
    with the step's `train/` metrics; `describe(module, seconds, metrics, outputs)` adds the stage's own."""

    def __init__(self, results: Results, row: dict, device: str, accumulate: int, describe) -> None:
        self.results, self.row, self.device, self.accumulate, self.describe = results, row, device, accumulate, describe
        self.steps: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        sync(self.device)
        self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.accumulate:
            return
        sync(self.device)
        now = time.perf_counter()
        metrics = {k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("train/") and v.numel() == 1}
        step = {"step": len(self.steps) + 1, "seconds": now - self.last, "peak_gib": peak_gib(self.device),
                **self.describe(pl_module, now - self.last, metrics, outputs), "metrics": metrics}
        self.steps.append(step)
        self.results.add({"kind": "stage-step", **self.row, **step})
        self.last = time.perf_counter()


def state_gib(cfg: dict, folder: Path) -> float:
    """GiB a full fine-tuning recipe holds at world size 1 before any activation: weights and
    gradients in the load dtype, AdamW's two fp32 moments, and a reference copy where one is built."""
    from eva_train.model.loading import DTYPES, ModelSpec, init_empty_model

    args = cfg["model"]["init_args"]
    spec = ModelSpec(**{**args["model"], "path": str(folder)})
    n = sum(p.numel() for p in init_empty_model(spec).parameters())
    size = DTYPES[spec.dtype].itemsize
    copy = args.get("reference", {}).get("kind") == "copy" and (
        "KTO" in cfg["model"]["class_path"] or args.get("loss", {}).get("kl_coef", 0) > 0)
    return n * (2 * size + 8 + (size if copy else 0)) / 2**30


def fit_run(results: Results, name: str, folder: Path, data, describe, args, overrides: dict | None = None,
            extra_callbacks: list | None = None) -> dict:
    """One recipe run: build, fit `args.steps` optimizer steps, and the `stage` row (the last step's
    figures). An FSDP recipe whose state cannot fit the device at world size 1 is not started."""
    recipe_name, quantization, _ = RUNS[name]
    cfg = recipe(recipe_name)
    row = {"run": name, "recipe": recipe_name, "quantization": quantization}
    if quantization == "4bit" and args.device != "cuda":
        return row | {"skipped": "4-bit needs a CUDA GPU"}
    if "strategy" in cfg["trainer"]:
        row["state_gib"] = state_gib(cfg, folder)
        if args.memory_gib and row["state_gib"] > args.memory_gib and not args.try_all:
            return row | {"skipped": f"state {row['state_gib']:.0f} GiB > device {args.memory_gib:.0f} GiB"}
    accumulate = cfg["trainer"].get("accumulate_grad_batches", 1)
    if args.device == "cpu":  # float32 throughout: bf16 products run ~30x slower on the development CPU
        overrides = {**(overrides or {}), "model": {"dtype": "float32"}}
        if "sharding" in cfg["model"]["init_args"]:
            overrides["sharding"] = {"param_dtype": None}
    clock = StepClock(results, row, args.device, accumulate, describe)
    module = trainer = None
    start = time.perf_counter()
    try:
        if args.device == "cuda":  # what an earlier run left allocated shows here, and in the peak
            row["allocated_gib_before"] = torch.cuda.memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        module = build_module(cfg, folder, quantization, overrides or {})
        trainer = make_trainer(cfg, args.device, args.steps, [*(extra_callbacks or []), clock])
        if isinstance(data, L.LightningDataModule):
            trainer.fit(module, datamodule=data)
        else:
            trainer.fit(module, train_dataloaders=Repeat(data, args.steps * accumulate))
        n, full = model_size(module)
        row |= {"base_params": n, "full_fine_tuning": full}
    except Exception as err:  # the steps that ended before it still count
        row["error"] = error_text(err)
    row |= {"fit_seconds": time.perf_counter() - start, "accumulate": accumulate, "peak_gib": peak_gib(args.device),
            "steps": len(clock.steps)}
    if clock.steps:
        row |= {k: v for k, v in clock.steps[-1].items() if k not in ("step", "metrics", "peak_gib")}
        row["step_seconds"] = [s["seconds"] for s in clock.steps]
    del module, trainer
    free(args.device)
    return row


def mfu(flops: float, seconds: float, ctx: dict) -> float | None:
    """Model FLOPs utilisation; None on CPU, where the bf16 product rate is no meaningful peak."""
    return flops / seconds / (ctx["matmul_bf16_tflops"] * 1e12) if ctx["device"] != "cpu" else None


# ---- SFT and KTO --------------------------------------------------------------------------------

class OneBatch:
    """A one-batch stand-in for a rank's `ConversationStream`, for `precompute_reference`."""

    def __init__(self, batch) -> None:
        self.batch = batch

    def batches(self, position):
        return [(self.batch, position)]


class PrecomputeReference(L.Callback):
    """Before the first step: the batch's reference log-probs (the base under disabled adapters,
    the same model as kind "precomputed" assumes) written where `kto-lora-precomputed` reads them."""

    def __init__(self, batch, path: Path) -> None:
        self.batch, self.path, self.seconds = batch, path, None

    def on_fit_start(self, trainer, module) -> None:
        from eva_train.objectives.precompute import precompute_reference
        from eva_train.objectives.reference import AdapterReference, write_table

        start = time.perf_counter()
        with trainer.precision_plugin.forward_context():
            table = precompute_reference(AdapterReference(module.policy), [OneBatch(self.batch)], epochs=1,
                                         device=module.device)
        write_table(table, self.path, meta={"benchmark": "gpu_stages"})
        self.seconds = time.perf_counter() - start


def conversation_rows(processor, args, rows: int, *, kto: bool):
    """`rows` copies of one protocol-shaped conversation (KTO: alternately desirable, each its own id)."""
    from dataclasses import replace

    from eva_train.encoding.collate import collate, collate_kto

    sample, n_frames = gpu_train.conversation_sample(processor, args.tokens, args.frame_hw, images=True)
    samples = [replace(sample, sample_id=f"row{i}", meta={"desirable": i % 2 == 0}) for i in range(rows)]
    pad = processor.tokenizer.pad_token_id
    return (collate_kto if kto else collate)(samples, pad_id=pad), n_frames


def run_supervised(results: Results, name: str, folder: Path, processor, args, ctx: dict, work: Path) -> dict:
    """An SFT or KTO run; for KTO, model FLOPs count the pairs' and the reference's no-grad forwards."""
    from eva_train.encoding.kl_pairs import batch_prompts, mismatched_batch

    recipe_name, _, reference = RUNS[name]
    cfg = recipe(recipe_name)
    kto = recipe_name.startswith("kto")
    rows = cfg["data"]["init_args"]["batch_size"]
    batch, n_frames = conversation_rows(processor, args, max(rows, 2) if kto else rows, kto=kto)
    pair_tokens = mismatched_batch(batch, batch_prompts(batch), 0).num_tokens if kto else 0
    table = work / "kto-reference.json"
    overrides, callbacks = {}, []
    if reference == "precomputed":
        if not table.is_file():
            return {"run": name, "skipped": "needs the table kto-lora writes"}
        overrides["reference"] = {"kind": "precomputed", "path": str(table)}
    elif name == "kto-lora":
        callbacks.append(PrecomputeReference(batch, table))
    accumulate = cfg["trainer"].get("accumulate_grad_batches", 1)

    def describe(module, seconds, metrics, outputs):
        n, full = model_size(module)
        tokens = accumulate * batch.num_tokens
        flops = (8 if full else 6) * n * tokens
        if kto:  # pairs under the policy, no grad; batch and pairs under the reference unless precomputed
            ref_tokens = 0 if reference == "precomputed" else batch.num_tokens + pair_tokens
            flops += 2 * n * accumulate * (pair_tokens + ref_tokens)
        return {"tokens": tokens, "tokens_per_s": tokens / seconds, "model_flops": flops,
                "mfu": mfu(flops, seconds, ctx)}

    row = fit_run(results, name, folder, batch, describe, args, overrides, callbacks)
    row |= {"rows": batch.rows, "row_tokens": args.tokens, "frames_per_row": n_frames}
    if callbacks and callbacks[0].seconds is not None:
        row["precompute_seconds"] = callbacks[0].seconds
    return row


# ---- GRPO ---------------------------------------------------------------------------------------

class RolloutProbe(L.Callback):
    """Forces a frame_select call into every reply and times the engine's prefill and decode."""

    def __init__(self, suffix: str, device: str) -> None:
        self.suffix, self.timer, self.devices = suffix, PhaseTimer(device), {}

    def on_fit_start(self, trainer, module) -> None:
        from eva_core.backends.forced import AppendToolCall

        engine = module.engine
        self.devices = {"engine": str(engine.device), "policy": str(module.device)}
        if engine.device != module.device:  # the engine was built before the trainer moved the policy
            engine.device = module.device  # recorded, so the run measures the rest; a bug to fix in eva
        self.timer.wrap(engine, "_prefill", "prefill")
        self.timer.wrap(engine, "_decode", "decode")
        forced = AppendToolCall(engine, self.suffix)
        forced.sync_weights, forced.suppress = engine.sync_weights, engine.suppress  # what GRPOModule reads
        module.engine = forced

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.timer.reset()


def rl_data(video: Path, prompts: int, steps: int):
    """`steps` x `prompts` choice prompts on one video, served by the recipe's data module type."""
    from eva_data.records.records import RlPrompt, Source
    from eva_train.data.datamodules import RlPromptDataModule
    from eva_train.data.sources import ListSource, RlItem

    items = [RlItem(RlPrompt(id=f"bench-{i}", source=Source.ORACLE, video_key="bench", item_index=i,
                             prompt=[{"role": "user", "content": QUESTION.format(SUBJECTS[i % len(SUBJECTS)])}],
                             answer_type="choice", ground_truth="A"), str(video))
             for i in range(prompts * steps)]
    return RlPromptDataModule(source=ListSource(items, shuffle=False), prompts_per_step=prompts)


def episode_counts(scored) -> dict[str, float]:
    """Tokens of a step's episodes: sampled, prefilled, the training sequences, and decode forwards
    (per turn, the longest reply less one: its first token comes from the prefill's logits)."""
    steps = [s.episode.steps for s in scored]
    turns = max(len(st) for st in steps)
    longest = [max((st[t].completion_tokens for st in steps if len(st) > t), default=0) for t in range(turns)]
    return {"episodes": len(scored), "turns": sum(len(st) for st in steps) / len(steps),
            "generated_tokens": sum(s.completion_tokens for st in steps for s in st),
            "prefilled_tokens": sum(s.prefill_tokens or 0 for st in steps for s in st),
            "visual_tokens": sum(s.visual_tokens for st in steps for s in st[-1:]),
            "sequence_tokens": sum(st[-1].prompt_tokens + st[-1].completion_tokens for st in steps if st),
            "decode_steps": sum(max(n - 1, 0) for n in longest)}


def run_grpo(results: Results, name: str, folder: Path, video: Path, args, ctx: dict) -> dict:
    from eva_core.backends.forced import frame_select_call
    from eva_train.model.sharding import is_sharded

    cfg = recipe(RUNS[name][0])
    prompts = args.grpo_prompts or cfg["data"]["init_args"]["prompts_per_step"]
    probe = RolloutProbe("\n" + frame_select_call(0.0, args.video_seconds, args.grpo_frames, args.grpo_resize),
                         args.device)
    overrides = {"rollout": {"max_turns": args.grpo_turns, "max_new_tokens": args.grpo_new_tokens},
                 "loss": {"mask_truncated": False}}

    def describe(module, seconds, m, outputs):
        n, full = model_size(module)
        c = episode_counts(outputs["record"].scored)
        prefill, decode = probe.timer.seconds["prefill"], probe.timer.seconds["decode"]
        flops = (8 if full else 6) * n * c["sequence_tokens"]
        # the bound as in the decode rows; a sharded policy's stored bytes are not what a step reads
        bound = None if is_sharded(module.policy) else ctx["copy_bandwidth_gbs"] * 1e9 / decode_bytes(module.policy)[0]
        return {**c, "prefill_s": prefill, "decode_s": decode,
                "rollout_other_s": m["rollout_s"] - prefill - decode - m["tool_s"],
                "rollout_share": m["rollout_s"] / seconds, "decode_steps_per_s": c["decode_steps"] / decode,
                "decode_share_weights": bound and c["decode_steps"] / decode / bound,
                "generated_per_s": c["generated_tokens"] / decode, "prefilled_per_s": c["prefilled_tokens"] / prefill,
                "train_tokens_per_s": c["sequence_tokens"] / m["train_s"],
                "train_mfu": mfu(flops, m["train_s"], ctx)}

    row = fit_run(results, name, folder, rl_data(video, prompts, args.steps), describe, args, overrides, [probe])
    return row | {"prompts": prompts, "group_size": cfg["model"]["init_args"]["rollout"]["group_size"],
                  "max_turns": args.grpo_turns, "max_new_tokens": args.grpo_new_tokens,
                  "frames_per_call": args.grpo_frames, "resize": args.grpo_resize, "devices": probe.devices}


def decode_shapes(args) -> dict:
    """`run_decode`'s batches (`--decode-batches` and each GRPO recipe's G x prompts a rank), G and LoRA."""
    grpo = [recipe(RUNS[r][0]) for r in ("grpo-lora", "grpo-fsdp")]
    per_rank = {c["model"]["init_args"]["rollout"]["group_size"] * c["data"]["init_args"]["prompts_per_step"]
                for c in grpo}
    return {"batches": sorted(set(args.decode_batches) | per_rank),
            "group": grpo[0]["model"]["init_args"]["rollout"]["group_size"], "lora": grpo[0]["model"]["init_args"]["lora"]}


# ---- the run ------------------------------------------------------------------------------------

# option: (type, GPU default, --tiny default, help); a list type takes several values
SIZES = {
    "tokens": (int, 4096, 512, "SFT/KTO row length"),
    "frame_size": (str, "448x784", "56x112", "SFT/KTO frames, HxW, multiples of 28"),
    "grpo_prompts": (int, None, None, "GRPO prompts a step (None: the recipe's)"),
    "grpo_turns": (int, 2, 2, "turns an episode"),
    "grpo_new_tokens": (int, 64, 8, "tokens a reply"),
    "grpo_frames": (int, 8, 2, "frames a call"),
    "grpo_resize": (float, 0.5, 0.5, "resize of a call"),
    "video": (str, "640x360", "112x112", "the generated video, WxH"),
    "video_seconds": (float, 30.0, 4.0, "its length"),
    "decode_batches": (list, [1, 8, 32], [1, 8, 32], "decode batches besides GRPO's G x prompts a rank"),
    "decode_new_tokens": (int, 32, 16, "decode steps a measurement"),
    "decode_context": (int, 1024, 128, "prompt tokens of a decode measurement"),
    "decode_repeats": (int, 2, 3, "timed repeats after a warm-up (best kept)"),
    "compile_batches": (list, [64], [8], f"batches of {COMPILED}"),
    "budget_s": (float, 360.0, math.inf, "start nothing new after this many seconds"),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_stages.jsonl")
    p.add_argument("--tiny", action="store_true", help="dry run: the tiny model, small sizes (CPU)")
    p.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS, help="decode variants")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps a run")
    for key, (kind, gpu, tiny, text) in SIZES.items():
        many = {"nargs": "*", "type": int} if kind is list else {"type": kind}
        p.add_argument("--" + key.replace("_", "-"), default=None, help=f"{text} ({gpu}; tiny {tiny})", **many)
    p.add_argument("--try-all", action="store_true", help="start FSDP runs whose state exceeds the device memory")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    args = p.parse_args(argv)
    for key, (_, gpu, tiny, _) in SIZES.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else gpu)
    args.runs = [r for r in RUNS if r in args.runs]
    args.frame_hw = tuple(int(v) for v in args.frame_size.split("x"))
    if any(v % 28 for v in args.frame_hw):
        p.error("--frame-size sides must be multiples of 28")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    deadline = start + args.budget_s

    import lightning
    import peft
    import transformers

    cuda = args.device == "cuda"
    ctx = {"device": torch.cuda.get_device_name() if cuda else "cpu",
           "matmul_bf16_tflops": gpu_train.matmul_tflops(args.device, 8192 if cuda else 512),
           "copy_bandwidth_gbs": copy_bandwidth(args.device, 2**32 if cuda else 2**28) / 1e9,
           "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
           "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "lightning": lightning.__version__, "argv": sys.argv[1:] if argv is None else argv}
    results = Results(Path(args.out), ctx, name="gpu_stages.jsonl")
    args.memory_gib = ctx["memory_gib"]
    plain = [v for v in args.variants if v != COMPILED]
    plan = (["decode"] if plain else []) + args.runs
    if COMPILED in args.variants:
        plan.insert(plan.index("grpo-qlora") if "grpo-qlora" in plan else len(plan), "decode-compile")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        folder = gpu_train.build_model_folder("tiny" if args.tiny else "7b", work / "model", args.device)
        free(args.device)
        from eva_core.sample_video import write_sample_video
        from transformers import AutoProcessor

        width, height = (int(v) for v in args.video.split("x"))
        video = write_sample_video(work / "video.mp4", duration=args.video_seconds, fps=10, width=width,
                                   height=height, gop=10)
        processor = AutoProcessor.from_pretrained(folder)
        results.add({"kind": "build", "seconds": time.perf_counter() - t0})
        for name in plan:
            if name.startswith("decode") and time.perf_counter() > deadline:
                results.add({"kind": "decode", "job": name, "skipped": "time budget"})
            elif name.startswith("decode"):
                try:
                    run_decode(results, folder, [COMPILED] if name == "decode-compile" else plain, args=args,
                               ctx=ctx, deadline=deadline, **decode_shapes(args))
                except Exception as err:
                    results.add({"kind": "decode", "error": error_text(err)})
            elif time.perf_counter() > deadline:
                results.add({"kind": "stage", "run": name, "skipped": "time budget"})
            elif name.startswith("grpo"):
                results.add({"kind": "stage", **run_grpo(results, name, folder, video, args, ctx)})
            else:
                results.add({"kind": "stage", **run_supervised(results, name, folder, processor, args, ctx, work)})
    results.add({"kind": "done", "seconds": time.perf_counter() - start})
    return 0


if __name__ == "__main__":
    sys.exit(main())

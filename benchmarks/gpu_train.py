"""SFT steps and an agent episode at the Qwen2.5-VL-7B and 3B shapes on one GPU, with random weights.

    python benchmarks/gpu_train.py --out DIR                       # on a GPU: 7B then 3B
    uv run python benchmarks/gpu_train.py --tiny --out /tmp/gt     # dry run on CPU, tiny shape

Per model size:
1. The model is built from its published config (`eva_train.model.qwen_shapes`) with random bf16
   weights directly on the device and saved, with the tiny tokenizer's processor
   (`eva_core.tiny_model`), to a work folder; every mode then loads it with
   `eva_train.model.loading.load_model` as a recipe does (QLoRA quantises on load). Nothing is
   downloaded. Random weights cost the same compute as trained ones.
2. Per mode, one `SFTModule` with the settings of `configs/sft-7b-lora.yaml` (LoRA r 64, gradient
   checkpointing, frozen vision tower, AdamW) under a Lightning trainer with that recipe's
   precision (`bf16-mixed`) and gradient clipping (1.0); per length, `--warmup` + `--steps`
   optimizer steps on one conversation of that many tokens (batch 1, no accumulation): a
   protocol-shaped trajectory with one 448-token frame (784x448) per 512 tokens, loss on the
   assistant turns, encoded by `eva_train.encoding.masking`. Modes:
   - `lora`: the recipe as written;
   - `qlora`: the same on a 4-bit NF4 base (`quantization: 4bit`);
   - `lora-text`: the same lengths without images (the language model alone), first length only;
   - `lora-loop`: the vision tower's window attention as transformers runs it under sdpa, one
     call per window (`eva_core.vision_attention` undone), first length only;
   - `lora-before`: that, and the vision tower back in backward (the input-grad hooks and the
     tower's checkpointing restored: `keep_frozen_tower_out_of_backward` undone), first length only.
3. Printed per step: seconds (median of the timed steps; the batch is already on the device),
   tokens/s, model FLOPs utilisation and peak allocated memory. MFU = tokens/s x 6 N / peak
   rate, N = the base model's parameters (vision tower included): a LoRA step over a frozen base
   with recomputation costs about 2N (forward) + 2N (the recomputed forward) + 2N (gradients of
   the activations; no weight gradients) FLOPs a token. Attention's quadratic term is not
   counted. The peak rate is a bf16 8192^3 matrix product measured on the device at the start.
4. An episode through `TransformersPolicy`, with and without KV-cache reuse: 3 turns, each
   prompt ending with a tool turn of 16 new frames, 1 new token a turn, so a turn's time is
   its prefill (and one sampled token).

Each result is printed and appended to DIR/gpu_train.jsonl as it comes; an error (out of
memory, say) is recorded and the run goes on.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "sft-7b-lora.yaml"
TOKENS_PER_FRAME_SLOT = 512  # one frame per 512 tokens of conversation


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(device: str, n: int) -> float:
    """Measured bf16 n x n x n matrix-product rate, TFLOP/s (the MFU denominator)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


# ---- the model folder ---------------------------------------------------------------------------

def build_model_folder(size: str, folder: Path, device: str) -> Path:
    """Random bf16 weights of `size` built on `device`, saved with the tiny tokenizer's processor.

    Random weights write chat markers a trained model never writes (an image placeholder in a
    reply breaks a GRPO episode's training sequence), so the generation config suppresses the
    special tokens but the two end tokens, as the tiny model's own checkpoint does."""
    from eva_core.tiny_model import END_TOKENS, QWEN_ADDED_TOKENS, build_config, build_processor
    from eva_train.model.qwen_shapes import qwen2_5_vl_config
    from transformers import AutoModelForImageTextToText, GenerationConfig

    processor = build_processor()
    tok = processor.tokenizer
    if size == "tiny":
        config = build_config(tok)
    else:
        ids = {key: tok.convert_tokens_to_ids(token) for key, token in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
            ("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"), ("pad_token_id", "<|endoftext|>"))}
        config = qwen2_5_vl_config(size, token_ids=ids)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    ends = [tok.convert_tokens_to_ids(t) for t in END_TOKENS]
    markers = [tok.convert_tokens_to_ids(t) for t, special in QWEN_ADDED_TOKENS if special and t not in END_TOKENS]
    model.generation_config = GenerationConfig(eos_token_id=ends, pad_token_id=ends[1], suppress_tokens=markers)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    return folder


# ---- data ---------------------------------------------------------------------------------------

def text(k: int, n: int) -> str:
    words = ("the", "frame", "shows", "a", "person", "near", "door", "then", "car", "stops", "red", "ball")
    return " ".join(words[(k + i) % len(words)] for i in range(n))


def frames(n: int, hw: tuple[int, int], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=g) for _ in range(n)]


def tool_turn(images: list[torch.Tensor], first: int) -> dict:
    """A protocol-shaped tool turn (eva_core.protocol.tool_turn's layout, written out here so the
    benchmark imports no video decoder)."""
    content = [{"type": "text", "text": "<tool_response>"}]
    for i, image in enumerate(images):
        content += [{"type": "text", "text": ("\n" if i else "") + f"Frame {i} at [00:{(first + i) % 60:02d}]: "},
                    {"type": "image", "image": image}]
    content.append({"type": "text", "text": "\nIf more information is needed, call the frame selection tool "
                                            "again.\n\nQuestion: what happens?</tool_response>"})
    return {"role": "tool", "content": content}


def opening() -> list[dict]:
    return [{"role": "system", "content": [{"type": "text", "text": "Use Frame Select Tool to Anlysis the video."}]},
            {"role": "user", "content": [{"type": "text", "text": "Video Length: 600 seconds. What happens? "
                                                                  "A. one B. two C. three D. four"}]}]


def assistant(s: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": s}]}


def conversation_batch(processor, tokens: int, hw: tuple[int, int], *, images: bool):
    """One collated conversation of exactly `tokens` tokens (`conversation_sample`) and its frame count."""
    from eva_train.encoding.collate import collate

    sample, n_frames = conversation_sample(processor, tokens, hw, images=images)
    return collate([sample], pad_id=processor.tokenizer.pad_token_id), n_frames


def conversation_sample(processor, tokens: int, hw: tuple[int, int], *, images: bool):
    """One encoded conversation of exactly `tokens` tokens: rounds of (assistant call, tool turn
    of 8 frames) holding tokens // 512 frames, then a long final assistant turn cut to length."""
    from eva_train.encoding.masking import encode_conversation, truncate

    n_frames = tokens // TOKENS_PER_FRAME_SLOT if images else 0
    shown = frames(n_frames, hw, seed=tokens)
    messages = opening()
    for r in range(0, n_frames, 8):
        messages += [assistant(f"Summary: {text(r, 30)}. <tool_call>frame_select</tool_call>"),
                     tool_turn(shown[r:r + 8], r)]
    messages.append(assistant(text(0, 8)))
    short = len(encode_conversation(processor, messages, with_pixels=False).input_ids)
    messages[-1] = assistant(text(0, max(8, tokens - short + 16)))  # at least one token a word: overshoots
    sample = truncate(encode_conversation(processor, messages), tokens)
    if len(sample.input_ids) != tokens:
        raise RuntimeError(f"built {len(sample.input_ids)} tokens, wanted {tokens}")
    return sample, n_frames


class Repeat:
    """The same batch `n` times: a train loader of fixed steps."""

    def __init__(self, batch, n: int) -> None:
        self.batch, self.n = batch, n

    def __iter__(self):
        return iter([self.batch] * self.n)

    def __len__(self) -> int:
        return self.n


# ---- training steps -----------------------------------------------------------------------------

def recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def sft_module(folder: Path, quantization: str):
    from eva_train.model.loading import LoraSpec, ModelSpec
    from eva_train.model.optim import OptimSpec
    from eva_train.stages.sft import SFTModule

    args = recipe()["model"]["init_args"]
    spec = ModelSpec(**{**args["model"], "path": str(folder), "quantization": quantization})
    return SFTModule(spec, lora=LoraSpec(**args["lora"]), optim=OptimSpec(**args["optim"]))


def restore_window_loop(module) -> None:
    """transformers' own vision attention forward (one sdpa call per window) back on every vision block."""
    for m in module.policy.modules():
        if type(m).__name__ == "Qwen2_5_VLVisionAttention":
            vars(m).pop("forward", None)


def put_tower_back_in_backward(module) -> None:
    """`keep_frozen_tower_out_of_backward` undone: input-grad hooks on the tower and its checkpointing restored."""
    from eva_train.model.loading import base_model

    base_model(module.policy).activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def time_steps(module, batch, device: str, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds of each optimizer step of a Lightning fit with the recipe's trainer settings; and losses."""
    import lightning as L

    trainer_cfg = recipe()["trainer"]
    seconds, losses = [], []

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync(device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(device)
            seconds.append(time.perf_counter() - self.start)
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision=trainer_cfg["precision"], gradient_clip_val=trainer_cfg["gradient_clip_val"],
                        max_steps=warmup + steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()])
    trainer.fit(module, train_dataloaders=Repeat(batch, warmup + steps))
    return seconds[warmup:], losses


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ---- the episode --------------------------------------------------------------------------------

def episode(policy, *, turns: int, per_turn: int, hw: tuple[int, int], episode_id: str) -> list[dict]:
    """Turn k's prompt ends with a tool turn of `per_turn` new frames; one new token a turn."""
    from eva_core.policy import GenerationConfig, GenerationRequest

    messages = [*opening(), assistant("<tool_call>frame_select</tool_call>")]
    rows = []
    for turn in range(turns):
        messages.append(tool_turn(frames(per_turn, hw, seed=1000 + turn), turn * per_turn))
        (gen,) = policy.generate([GenerationRequest(messages=list(messages), episode_id=episode_id)],
                                 GenerationConfig(max_new_tokens=1))
        rows.append({"turn": turn + 1, "seconds": gen.seconds, "prompt_tokens": gen.prompt_tokens,
                     "prefill_tokens": gen.prefill_tokens, "reused_tokens": gen.extra.get("reused_tokens")})
        messages.append(assistant(gen.text + " <tool_call>frame_select</tool_call>"))
    policy.release(episode_id)
    return rows


# ---- the run ------------------------------------------------------------------------------------

class Results:
    """Appends every result to a JSON-lines file (`out`/`name`) and prints it."""

    def __init__(self, out: Path, context: dict, name: str = "gpu_train.jsonl") -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / name
        self.context = context
        self.add({"kind": "context", **context})

    def add(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print("RESULT " + json.dumps(row), flush=True)


def run_training(results: Results, folder: Path, size: str, args, peak: float) -> None:
    """The bf16 modes share one loaded model (`lora-loop` and `lora-before` last: they change it);
    qlora loads its own."""
    from eva_train.model.loading import count_parameters
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    groups = [("none", [m for m in ("lora", "lora-text", "lora-loop", "lora-before") if m in args.modes])]
    if "qlora" in args.modes:
        groups.append(("4bit", ["qlora"]))
    for quantization, modes in groups:
        if not modes:
            continue
        if quantization == "4bit" and args.device != "cuda":
            results.add({"kind": "train", "size": size, "mode": "qlora", "skipped": "4-bit needs a CUDA GPU"})
            continue
        module = None
        try:
            start = time.perf_counter()
            module = sft_module(folder, quantization)
            module.configure_model()
            counts = count_parameters(module.policy)
            n_base = counts.total - counts.trainable
            results.add({"kind": "load", "size": size, "quantization": quantization, "base_params": n_base,
                         "trainable_params": counts.trainable, "seconds": time.perf_counter() - start})
            for mode in modes:
                if mode in ("lora-loop", "lora-before"):
                    restore_window_loop(module)
                if mode == "lora-before":
                    put_tower_back_in_backward(module)
                for tokens in args.tokens if mode in ("lora", "qlora") else args.tokens[:1]:
                    results.add(train_row(module, processor, size, mode, tokens, n_base, args, peak))
                    free(args.device)
        except Exception as err:
            results.add({"kind": "train", "size": size, "modes": modes, "error": f"{type(err).__name__}: {err}"[:400]})
            traceback.print_exc()
        del module
        free(args.device)


def train_row(module, processor, size: str, mode: str, tokens: int, n_base: int, args, peak: float) -> dict:
    """Time one length; an error (out of memory, say) is recorded in the row."""
    row = {"kind": "train", "size": size, "mode": mode, "tokens": tokens}
    try:
        batch, n_frames = conversation_batch(processor, tokens, args.frame_hw, images=mode != "lora-text")
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds, losses = time_steps(module, batch, args.device, args.warmup, args.steps)
        step = statistics.median(seconds)
        rate = tokens / step
        row |= {"frames": n_frames, "step_seconds": step, "all_seconds": seconds, "tokens_per_s": rate,
                "mfu": rate * 6 * n_base / (peak * 1e12), "loss_first_last": [losses[0], losses[-1]],
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None}
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"[:400]
        traceback.print_exc()
    return row


def run_episode(results: Results, folder: Path, size: str, args) -> None:
    from eva_core.backends import TransformersPolicy

    try:
        reuse = TransformersPolicy.from_pretrained(str(folder), device=args.device, dtype="bfloat16")
        fresh = TransformersPolicy(reuse.model, reuse.processor, reuse_kv_cache=False)
        kw = {"turns": args.turns, "per_turn": args.episode_frames, "hw": args.frame_hw}
        episode(reuse, episode_id="warm-up", **kw)  # first-call costs out of the timings
        for name, policy in (("reuse", reuse), ("no reuse", fresh)):
            for row in episode(policy, episode_id=f"timed-{name}", **kw):
                results.add({"kind": "episode", "size": size, "mode": name, **row})
        del reuse, fresh
    except Exception as err:
        results.add({"kind": "episode", "size": size, "error": f"{type(err).__name__}: {str(err)[:300]}"})
        traceback.print_exc()
    free(args.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_train.jsonl")
    parser.add_argument("--tiny", action="store_true", help="dry run: the tiny shape, short lengths, small frames")
    parser.add_argument("--sizes", nargs="+", default=["7b", "3b"], choices=["7b", "3b"])
    modes = ["lora", "lora-text", "lora-loop", "lora-before", "qlora"]
    parser.add_argument("--modes", nargs="+", default=modes, choices=modes)
    parser.add_argument("--tokens", nargs="+", type=int, default=[8192, 16384, 32768])
    parser.add_argument("--episode-sizes", nargs="*", default=["7b"], help="sizes that also run the episode")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--episode-frames", type=int, default=16, help="new frames a turn")
    parser.add_argument("--frame-size", default="448x784", help="frame height x width, multiples of 28")
    parser.add_argument("--work", default=None, help="folder for the built checkpoints (default: a temporary one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.episode_sizes = ["tiny"], ["tiny"]
        if args.tokens == parser.get_default("tokens"):
            args.tokens = [1024, 2048]
        if args.frame_size == parser.get_default("frame_size"):
            args.frame_size = "56x112"
        args.episode_frames = min(args.episode_frames, 4)
    args.frame_hw = tuple(int(v) for v in args.frame_size.split("x"))
    if any(v % 28 for v in args.frame_hw):
        parser.error("--frame-size sides must be multiples of 28")

    import lightning
    import peft
    import transformers

    peak = matmul_tflops(args.device, 8192 if args.device == "cuda" else 512)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results = Results(Path(args.out), {
        "device": device_name, "matmul_bf16_tflops": peak, "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__, "lightning": lightning.__version__,
        "argv": sys.argv[1:] if argv is None else argv})
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for size in args.sizes:
            start = time.perf_counter()
            folder = build_model_folder(size, Path(work) / size, args.device)
            free(args.device)
            results.add({"kind": "build", "size": size, "seconds": time.perf_counter() - start})
            run_training(results, folder, size, args, peak)
            if size in args.episode_sizes:
                run_episode(results, folder, size, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

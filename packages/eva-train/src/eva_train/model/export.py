"""Export a training checkpoint as a Hugging Face model folder that eva-core and vLLM load directly.

`export_checkpoint(ckpt, out)` rebuilds the policy from the base folder named in the
checkpoint's specs (its "eva_train" entry), loads the trained parameters the checkpoint holds (LoRA adapters
or unfrozen weights; frozen ones are never in it, see `eva_train.stages.base`), and writes

- by default a full model: LoRA merged into the base weights, `config.json`,
  `model.safetensors`, the generation config and the base folder's processor files
  (tokenizer, chat template, image processor), loadable with
  `AutoModelForImageTextToText.from_pretrained(out)` / `eva_core.backends.load_policy`;
- with `adapter_only=True` the peft adapter alone (`adapter_config.json`,
  `adapter_model.safetensors`, pointing at the base folder) plus the processor files, for
  vLLM's `--lora-modules` or `PeftModel.from_pretrained(base, out)`.

Both Lightning checkpoint files and FSDP2 distributed checkpoints (a folder of shards plus
`meta.pt`) are read; the latter are assembled in CPU memory. A base trained quantised (QLoRA
or 8-bit) is reloaded unquantised in its `dtype` for merging, as the QLoRA paper merges its
adapters. Weights are written in the base folder's dtype unless `dtype` is given.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from eva_train.model.loading import DTYPES, SPECS_KEY, LoraSpec, ModelSpec, load_model

# Files of a Hugging Face processor folder (Qwen2.5-VL's and the tiny model's).
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json", "chat_template.json", "chat_template.jinja",
                   "preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
                   "generation_config.json")


class ExportError(ValueError):
    """The checkpoint cannot be exported as asked."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint as a dict: a `.ckpt` file, or an FSDP2 distributed checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        if not (path / "meta.pt").is_file():
            raise ExportError(f"{path} is a folder but not a distributed checkpoint (no meta.pt)")
        return _load_distributed_checkpoint(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def specs_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[ModelSpec, LoraSpec | None]:
    """The model and LoRA specs an eva-train checkpoint was trained with."""
    specs = checkpoint.get(SPECS_KEY) or {}
    if "model" not in specs:
        raise ExportError(f"not an eva-train checkpoint: it has no {SPECS_KEY!r} entry naming the model")
    lora = specs.get("lora")
    return ModelSpec(**specs["model"]), (LoraSpec(**lora) if lora else None)


def trained_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The policy's parameters in the checkpoint, keys relative to the policy ("policy." removed)."""
    state = checkpoint.get("state_dict")
    if not state:
        raise ExportError("the checkpoint holds no state_dict")
    out = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
    if not out:
        raise ExportError("the checkpoint's state_dict holds no policy parameter")
    return out


def _base_dtype(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or config.get("text_config", {}).get("dtype")
    return dtype if dtype in DTYPES else "bfloat16"


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike, *, adapter_only: bool = False,
                      dtype: str | None = None) -> Path:
    """Write a Hugging Face folder from an eva-train checkpoint.

    Args:
        ckpt: a Lightning `.ckpt` file or an FSDP2 distributed checkpoint folder.
        out: destination folder (created; files of the same names are overwritten).
        adapter_only: write the LoRA adapter instead of a merged model.
        dtype: weight dtype of a merged export; default the base folder's.

    Returns:
        The output folder.
    """
    checkpoint = read_checkpoint(ckpt)
    spec, lora = specs_from_checkpoint(checkpoint)
    if adapter_only and lora is None:
        raise ExportError("--adapter-only needs a LoRA checkpoint; this one fine-tuned the base weights")
    base = Path(spec.path)
    dtype = dtype or _base_dtype(base)
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    # Unquantised, in float32 for an exact merge; cast once at the end.
    spec = replace(spec, quantization="none", dtype="float32", gradient_checkpointing=False)
    policy = load_model(spec, lora)
    state = trained_state(checkpoint)
    result = policy.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ExportError(f"checkpoint parameters not in the model: {result.unexpected_keys[:3]}")
    policy.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if adapter_only:
        policy.save_pretrained(out)
    else:
        model = policy.merge_and_unload() if lora is not None else policy
        model.to(DTYPES[dtype])
        model.config.use_cache = True
        model.save_pretrained(out)
    for name in PROCESSOR_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, out / name)
    return out

"""Loading the policy for training: a local Hugging Face checkpoint, optionally quantised, with LoRA.

Every stage (SFT, KTO, GRPO) loads its model here, from a local folder through
`AutoModelForImageTextToText.from_pretrained(path)`, exactly as eva-core loads it for
inference, so a checkpoint exported by `eva_train.model.export` round-trips. Nothing is downloaded:
`path` must be a folder (`ModelLoadError` otherwise).

- `ModelSpec` says how to load (dtype, attention implementation, gradient checkpointing,
  which parts of the vision side are frozen, quantisation).
- Under sdpa, the vision tower's window attention runs as one call per window length instead
  of one per window (`eva_core.vision_attention`).
- `LoraSpec` says which linear layers get LoRA adapters (peft). By default only the language
  model's attention and MLP projections; the vision tower's `qkv`/`proj`/MLP layers are left
  alone unless `vision=True` (the vision MLP reuses the names `gate_proj`/`up_proj`/`down_proj`,
  hence the regular expression over full module names rather than bare names).
- Quantisation through bitsandbytes: 4-bit (QLoRA, NF4, bf16 compute) needs a CUDA GPU. On CPU
  bitsandbytes 0.50's 4-bit layers give wrong results after an eval-mode forward, so it is
  refused with `QuantizationUnavailableError` rather than silently training garbage. 8-bit
  (LLM.int8) runs on CPU and GPU. A quantised base is frozen; only LoRA adapters train, so
  quantisation without LoRA is refused.

Departure from peft's `prepare_model_for_kbit_training`: it upcasts every non-quantised weight
(embeddings, lm_head, norms) to fp32, which costs 4.4 GB on Qwen2.5-VL-7B's embedding and head
alone; here they stay in the loading dtype and only the LoRA weights are fp32 (peft's
`autocast_adapter_dtype`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from eva_core.vision_attention import use_grouped_vision_attention
from torch import nn

# The checkpoint entry holding the specs that rebuild the policy (`eva_train.model.export`).
SPECS_KEY = "eva_train"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Qwen2-style decoder projections, the LoRA targets of most Qwen2.5-VL recipes (LLaMA-Factory, ms-swift).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ModelLoadError(ValueError):
    """The model folder or the loading options cannot be used."""


class QuantizationUnavailableError(RuntimeError):
    """The requested bitsandbytes quantisation cannot run on this machine."""


@dataclass
class ModelSpec:
    """How to load the policy.

    Attributes:
        path: local folder of a Hugging Face image-text-to-text checkpoint (Qwen2.5-VL-class).
        dtype: weight dtype at load time. Full fine-tuning with small learning rates needs
            "float32" master weights (a 2e-6 Adam step is below bfloat16's resolution of ~4e-3
            relative); compute can still run in bfloat16 (FSDP2 mixed precision or autocast).
        attn_implementation: "sdpa" (default), "eager", or "flash_attention_2" where installed.
        gradient_checkpointing: recompute activations in backward (non-reentrant).
        freeze_vision_tower: freeze the vision blocks and patch embedding.
        freeze_projector: freeze the patch merger that maps vision features to the decoder.
        quantization: "none", "8bit" (LLM.int8, CPU or GPU) or "4bit" (NF4 QLoRA, GPU only);
            a quantised base is frozen and needs `lora`.
    """

    path: str
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    freeze_vision_tower: bool = False
    freeze_projector: bool = False
    quantization: Literal["none", "8bit", "4bit"] = "none"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.quantization not in ("none", "8bit", "4bit"):
            raise ModelLoadError(f"quantization must be 'none', '8bit' or '4bit', got {self.quantization!r}")


@dataclass
class LoraSpec:
    """LoRA adapters (Hu et al. 2021) through peft.

    Attributes:
        r: rank.
        alpha: scaling numerator; the update is (alpha / r) * B A.
        dropout: dropout on the adapter input.
        target_modules: bare names of the linear layers to adapt.
        vision: also adapt the vision tower's layers of those names (and its `qkv`, `proj`).
        init_seed: seeds the adapters' random initialisation (A matrices; B starts at 0), so
            every data-parallel rank builds the same adapters: FSDP2 shards each rank's local
            copy and, unlike DDP, never broadcasts rank 0's.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    vision: bool = False
    init_seed: int = 0

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ModelLoadError(f"LoRA rank must be at least 1, got {self.r}")
        if not self.target_modules:
            raise ModelLoadError("LoRA needs at least one target module name")

    def target_regex(self) -> str:
        """The full-name regular expression peft matches against `named_modules()`."""
        names = "|".join(sorted(set(self.target_modules)))
        text = r"(.*\.)?language_model\.layers\.\d+\..*\.(" + names + ")"
        if not self.vision:
            return text
        vision_names = "|".join(sorted(set(self.target_modules) | {"qkv", "proj"}))
        return text + r"|(.*\.)?visual\.blocks\.\d+\..*\.(" + vision_names + ")"


def check_model_dir(path: str | os.PathLike) -> Path:
    """The folder as a Path, or `ModelLoadError` when it is not a local checkpoint folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"model path {str(path)!r} is not a local folder (nothing is downloaded; "
                             "build or copy the checkpoint first)")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"model folder {folder} has no config.json")
    return folder


def quantization_config(spec: ModelSpec, *, cuda_available: bool | None = None):
    """The `BitsAndBytesConfig` for `spec.quantization`, or None.

    Raises:
        QuantizationUnavailableError: 4-bit without a CUDA device.
    """
    if spec.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if spec.quantization == "4bit":
        if not cuda:
            raise QuantizationUnavailableError(
                "QLoRA (bitsandbytes 4-bit) needs a CUDA GPU: bitsandbytes' CPU 4-bit layers return wrong "
                "results after an eval-mode forward. Use quantization: 8bit or none on CPU.")
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=DTYPES[spec.dtype]
                                  if spec.dtype != "float32" else torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_model(spec: ModelSpec, lora: LoraSpec | None = None, *, device_map=None) -> nn.Module:
    """Load the policy from `spec.path`, freeze what the spec freezes, and add LoRA adapters.

    Args:
        spec: how to load.
        lora: adapters to add; None trains the (unfrozen) base weights themselves.
        device_map: passed to `from_pretrained` (quantised models are placed on load; None for
            the others, which the trainer moves).

    Returns:
        A `transformers` model, or a `peft.PeftModel` around it when `lora` is given, in train
        mode, with `requires_grad` set on exactly the trained parameters.
    """
    from transformers import AutoModelForImageTextToText

    folder = check_model_dir(spec.path)
    qconfig = quantization_config(spec)
    if qconfig is not None and lora is None:
        raise ModelLoadError(f"a {spec.quantization} quantised base is frozen: add a `lora` spec to train adapters")
    if qconfig is not None and device_map is None and torch.cuda.is_available():
        device_map = {"": torch.cuda.current_device()}
    model = AutoModelForImageTextToText.from_pretrained(
        folder, dtype=DTYPES[spec.dtype], attn_implementation=spec.attn_implementation,
        quantization_config=qconfig, device_map=device_map,
    )
    model.config.use_cache = False  # training never decodes incrementally
    use_grouped_vision_attention(model)  # one attention call per window length, not per window (eva_core.vision_attention)
    if lora is not None:
        model.requires_grad_(False)
    freeze_vision(model, tower=spec.freeze_vision_tower, projector=spec.freeze_projector)
    if spec.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if lora is not None:
            # The frozen embedding gives activations without grad; checkpointed blocks need one to backprop.
            model.enable_input_require_grads()
    if lora is not None:
        model = add_lora(model, lora)
    keep_frozen_tower_out_of_backward(model)
    model.train()
    return model


def init_empty_model(spec: ModelSpec, lora: LoraSpec | None = None) -> nn.Module:
    """The model `load_model` would build, on the meta device: shapes, freezing and LoRA, no weights.

    Reads only `config.json` from `spec.path`, so a recipe's model can be sized and its sharding
    planned without the checkpoint's weights (the 7B recipe test does this on CPU).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(check_model_dir(spec.path))
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=DTYPES[spec.dtype])
        if lora is not None:
            model.requires_grad_(False)
        freeze_vision(model, tower=spec.freeze_vision_tower, projector=spec.freeze_projector)
        if lora is not None:
            model = add_lora(model, lora)
    return model


def vision_modules(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """(vision tower, patch merger) of a Qwen2-VL-class model, or (None, None) when it has none."""
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None)
    return visual, getattr(visual, "merger", None) if visual is not None else None


def freeze_vision(model: nn.Module, *, tower: bool, projector: bool) -> None:
    """Freeze the vision tower (blocks, patch embedding) and/or the merger, in place."""
    visual, merger = vision_modules(model)
    if (tower or projector) and visual is None:
        raise ModelLoadError("freeze_vision_tower/freeze_projector need a model with a `visual` tower")
    if tower:
        merger_ids = {id(p) for p in merger.parameters()} if merger is not None else set()
        for p in visual.parameters():
            if id(p) not in merger_ids:
                p.requires_grad_(False)
    if projector and merger is not None:
        merger.requires_grad_(False)


# transformers' `enable_input_require_grads` (also reached from `activation_checkpointing_enable`)
# and peft's `PeftModel.__init__` name their forward hooks so.
_INPUT_GRAD_HOOKS = ("make_inputs_require_grads", "make_inputs_require_grad")


def keep_frozen_tower_out_of_backward(model: nn.Module) -> bool:
    """Make a frozen vision tower cost one forward and no backward, in place.

    `activation_checkpointing_enable`, `enable_input_require_grads` and peft's `PeftModel.__init__`
    each put a forward hook on every input embedding of the model, the tower's patch embedding
    included, that sets `requires_grad` on its output (for reentrant checkpointing over frozen
    embeddings); each call replaces the one handle the model keeps, so the others cannot be
    removed through it. With that hook the activations of a frozen tower require grad, and every
    step recomputes and back-propagates through all its blocks for no gradient (measured at the
    7B shape on an H200: an 8k-token, 16-frame LoRA step took 6.13 s with it and 1.78 s without;
    docs/benchmarks.md).
    When no parameter of the tower (the merger aside) trains, this removes those hooks from the
    tower's modules and turns off its gradient checkpointing (a forward without grad keeps
    nothing to recompute). Checkpointing here is non-reentrant, which needs no input that
    requires grad, so the language model's LoRA weights get the same gradients.

    Returns:
        True when the tower is frozen and was taken out of backward; False when a tower
        parameter trains or the model has no tower.
    """
    visual, merger = vision_modules(base_model(model))
    if visual is None:
        return False
    merger_ids = {id(p) for p in merger.parameters()} if merger is not None else set()
    if any(p.requires_grad for p in visual.parameters() if id(p) not in merger_ids):
        return False
    for module in visual.modules():
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__name__", "") in _INPUT_GRAD_HOOKS:
                del module._forward_hooks[key]
        if module is not merger and hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = False
    return True


def add_lora(model: nn.Module, lora: LoraSpec) -> nn.Module:
    """Wrap `model` in a `PeftModel` with LoRA on the layers `lora.target_regex()` matches."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_regex(), bias="none")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(lora.init_seed)
            return get_peft_model(model, config)
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        raise ModelLoadError(f"LoRA targets {lora.target_modules} match no layer: {err}") from err


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under an optional peft wrapper."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a model: all of them and the trained ones (element counts)."""

    total: int
    trainable: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / max(1, self.total)


def count_parameters(model: nn.Module) -> ParameterCount:
    """Element counts; a bitsandbytes 4-bit weight counts its logical (unpacked) size."""
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":  # packed two 4-bit values per byte
            n = int(p.quant_state.shape.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return ParameterCount(total=total, trainable=trainable)

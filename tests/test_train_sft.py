"""SFT on the tiny Qwen2.5-VL: full fine-tuning and LoRA fits, checkpoints, export, reload, an episode."""

from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch
from eva_core.agent import AgentConfig, run_episode
from eva_core.backends import TransformersPolicy
from eva_core.policy import GenerationConfig
from eva_core.sample_video import write_sample_video
from eva_train.data.datamodules import SFTDataModule
from eva_train.data.sources import ListSource
from eva_train.encoding.collate import collate
from eva_train.encoding.masking import encode_conversation
from eva_train.model.export import ExportError, export_checkpoint
from eva_train.model.loading import (
    LoraSpec,
    ModelLoadError,
    ModelSpec,
    QuantizationUnavailableError,
    load_model,
)
from eva_train.model.optim import OptimSpec
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.stages.sft import SFTModule
from train_conversations import make_conversations
from transformers import AutoModelForImageTextToText, AutoProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(tmp_path_factory.mktemp("sft") / "v.mp4", duration=8.0, fps=10, width=336,
                              height=252, gop=10)


@pytest.fixture(scope="module")
def conversations(video):
    return make_conversations(video, 8)


def _fit(tmp_path, module, conversations, *, steps, batch_size=4, **trainer_kw):
    data = SFTDataModule(module.model_spec.path, ListSource(conversations, seed=0), batch_size=batch_size,
                         max_length=2048, window_batches=2)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                        default_root_dir=tmp_path, **trainer_kw)
    trainer.fit(module, data)
    return trainer


def _losses(trainer):
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.policy.named_parameters()}


def _batch(tiny_model_dir, conversations):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    encoded = [encode_conversation(processor, c.messages) for c in conversations[:3]]
    return collate(encoded, pad_id=processor.tokenizer.pad_token_id)


def test_full_finetune_loss_falls_and_every_trained_weight_moves(tmp_path, tiny_model_dir, conversations):
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=True)
    module = SFTModule(spec, optim=OptimSpec(lr=3e-3, warmup_ratio=0.0, schedule="constant"))
    module.configure_model()
    before = _snapshot(module)
    trainer = _fit(tmp_path, module, conversations, steps=24, enable_checkpointing=False)
    losses = _losses(trainer)
    assert len(losses) == 24
    # A random initialisation predicts about uniformly: the first loss is close to ln(vocabulary).
    vocab = module.policy.config.text_config.vocab_size
    assert abs(losses[0] - math.log(vocab)) < 0.1, (losses[0], math.log(vocab))
    # Well below the start: the tiny model memorises the protocol's fixed strings quickly.
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    visual = {n for n, _ in module.policy.named_parameters() if n.startswith("model.visual.")
              and not n.startswith("model.visual.merger.")}
    for name, param in module.policy.named_parameters():
        moved = not torch.equal(param.detach(), before[name])
        assert moved == (name not in visual), name  # frozen tower unchanged, everything else trained
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        header = f.readline().strip().split(",")
    for column in ("train/loss", "train/lr", "train/tokens_per_s", "train/padding_fraction", "train/peak_mem_gib"):
        assert column in header


def test_lora_trains_adapters_only_and_exports_merged_and_adapter(tmp_path, tiny_model_dir, conversations, video):
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32")
    module = SFTModule(spec, lora=LoraSpec(r=8, alpha=16, dropout=0.0),
                       optim=OptimSpec(lr=5e-3, warmup_ratio=0.0))
    module.configure_model()
    before = _snapshot(module)
    trainer = _fit(tmp_path, module, conversations, steps=6)
    changed = {n for n, p in module.policy.named_parameters() if not torch.equal(p.detach(), before[n])}
    trainable = {n for n, p in module.policy.named_parameters() if p.requires_grad}
    assert changed == trainable and all("lora_" in n for n in trainable)
    assert any(".language_model.layers.1.mlp.down_proj.lora_B" in n for n in trainable)

    ckpt = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain data only
    assert set(saved["state_dict"]) == {f"policy.{n}" for n in trainable}  # frozen base not stored
    assert saved["eva_train"]["lora"]["r"] == 8 and saved["eva_train"]["stage"] == "SFTModule"
    assert "train_position" in saved["SFTDataModule"]  # the data position travels with it

    batch = _batch(tiny_model_dir, conversations)
    module.policy.eval()
    with torch.no_grad():
        trained = policy_logprobs(module.policy, batch)

    merged = export_checkpoint(ckpt, tmp_path / "merged")
    model = AutoModelForImageTextToText.from_pretrained(merged).eval()
    assert "lora" not in json.dumps(sorted(model.state_dict()))
    with torch.no_grad():
        assert torch.allclose(policy_logprobs(model, batch), trained, atol=1e-4)

    adapter = export_checkpoint(ckpt, tmp_path / "adapter", adapter_only=True)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tokenizer.json").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    from peft import PeftModel

    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        assert torch.allclose(policy_logprobs(PeftModel.from_pretrained(base, adapter).eval(), batch), trained,
                              atol=1e-4)

    # The merged folder is a checkpoint eva-core runs like any other.
    policy = TransformersPolicy.from_pretrained(str(merged), device="cpu")
    episode = run_episode(policy, video, "What is shown at the start? Options: A. one B. two C. three D. four",
                          AgentConfig(max_turns=2, generation=GenerationConfig(max_new_tokens=24), tool_threads=1))
    assert episode.steps and episode.steps[0].reply is not None
    assert episode.stop_reason is not None


def test_export_refuses_what_it_cannot_do(tmp_path, tiny_model_dir, conversations):
    module = SFTModule(ModelSpec(path=str(tiny_model_dir), dtype="float32"), optim=OptimSpec(lr=1e-3))
    trainer = _fit(tmp_path, module, conversations, steps=1)
    ckpt = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    with pytest.raises(ExportError, match="needs a LoRA checkpoint"):
        export_checkpoint(ckpt, tmp_path / "a", adapter_only=True)
    with pytest.raises(ExportError, match="does not exist"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "b")
    out = export_checkpoint(ckpt, tmp_path / "full")  # full fine-tuning exports as a plain model folder
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert AutoProcessor.from_pretrained(out).apply_chat_template(conversations[0].messages, tokenize=False) == \
        AutoProcessor.from_pretrained(tiny_model_dir).apply_chat_template(conversations[0].messages, tokenize=False)


def test_8bit_lora_trains_on_cpu(tmp_path, tiny_model_dir, conversations):
    module = SFTModule(ModelSpec(path=str(tiny_model_dir), dtype="float32", quantization="8bit"),
                       lora=LoraSpec(r=4, alpha=8, dropout=0.0), optim=OptimSpec(lr=5e-3, warmup_ratio=0.0))
    module.configure_model()
    before = _snapshot(module)
    _fit(tmp_path, module, conversations, steps=2, enable_checkpointing=False)
    for name, param in module.policy.named_parameters():
        assert (not torch.equal(param.detach(), before[name])) == param.requires_grad, name
    assert any(type(m).__name__ == "Linear8bitLt" for m in module.policy.modules())


def test_4bit_on_cpu_and_quantisation_without_lora_are_refused(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("the 4-bit refusal is for CPU-only machines")
    with pytest.raises(QuantizationUnavailableError, match="CUDA"):
        load_model(ModelSpec(path=str(tiny_model_dir), quantization="4bit"), LoraSpec())
    with pytest.raises(ModelLoadError, match="add a `lora` spec"):
        load_model(ModelSpec(path=str(tiny_model_dir), quantization="8bit"))

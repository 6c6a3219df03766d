"""Every recipe in configs/ parses; the 7B recipes build Qwen2.5-VL-7B on the meta device and plan its sharding.

Nothing is downloaded: the 7B config.json is written here with Qwen2.5-VL-7B-Instruct's
published sizes, and the model is instantiated on the meta device (shapes, no memory).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import yaml
from eva_train.cli import fit_cli
from eva_train.modeling import count_parameters, init_empty_model
from eva_train.sharding import sharding_plan
from jsonargparse import ArgumentParser

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

# Qwen2.5-VL-7B-Instruct's config.json sizes.
QWEN_7B_TEXT = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
QWEN_7B_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                  "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                  "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "in_chans": 3,
                  "tokens_per_second": 2, "hidden_act": "silu"}

# Parameter counts by hand (weights + biases):
# decoder layer: q 3584*3584+3584, k and v 3584*512+512 each, o 3584*3584, MLP 3 * 3584*18944,
#   two RMSNorms 2*3584 -> 12,848,640 + 2 * 1,835,520 + 12,845,056 + 203,685,888 + 7,168 = 233,057,792
DECODER_LAYER = 233_057_792
# vision block: qkv 1280*3840+3840, proj 1280*1280+1280, gate/up 2 * (1280*3420+3420),
#   down 3420*1280+1280, two RMSNorms 2*1280 -> 4,919,040 + 1,639,680 + 8,762,040 + 4,378,880 + 2,560
VISION_BLOCK = 19_702_200
EMBEDDING = 152064 * 3584  # = 544,997,376, the input embedding and (untied) the output head alike
# root: patch embedding 3*2*14*14*1280 (no bias) + merger (RMSNorm 1280, 5120*5120+5120, 5120*3584+3584)
#   + final RMSNorm 3584 -> 1,505,280 + 44,574,464 + 3,584
ROOT = 46_083_328
QWEN_7B_PARAMS = 28 * DECODER_LAYER + 32 * VISION_BLOCK + 2 * EMBEDDING + ROOT  # 8,292,166,656
# LoRA r=64 on q, k, v, o, gate, up, down of 28 layers: r * (in + out) each ->
#   64 * (2 * 7168 + 2 * 4096 + 3 * 22528) = 5,767,168 per layer
LORA_R64 = 28 * 64 * (2 * (3584 + 3584) + 2 * (3584 + 512) + 3 * (3584 + 18944))


@pytest.fixture(scope="module")
def qwen_7b_dir(tmp_path_factory):
    from transformers import Qwen2_5_VLConfig

    folder = tmp_path_factory.mktemp("qwen2_5_vl_7b_config")
    Qwen2_5_VLConfig(text_config=QWEN_7B_TEXT, vision_config=QWEN_7B_VISION, image_token_id=151655,
                     video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
                     tie_word_embeddings=False).save_pretrained(folder)
    return folder


def _resolved(path: Path, capsys) -> dict:
    """The config as `eva-train fit --config PATH --print_config` resolves and validates it."""
    with pytest.raises(SystemExit) as exit_info:
        fit_cli(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _module(config: dict):
    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningModule, "model")
    return parser.instantiate_classes(parser.parse_object({"model": config["model"]})).model


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_opens_with_its_purpose_and_command_and_parses(path, capsys, monkeypatch, qwen_7b_dir,
                                                                     tiny_model_dir):
    text = path.read_text()
    assert text.startswith("# "), "a recipe opens with a comment saying what it trains"
    assert f"eva-train fit --config configs/{path.name}" in text.split("\nseed_everything")[0]
    monkeypatch.setenv("EVA_QWEN_7B", str(qwen_7b_dir))
    config = _resolved(path, capsys)
    assert config["model"]["class_path"].startswith("eva_train.")
    if path.name.startswith("sft-"):
        assert config["model"]["class_path"] == "eva_train.sft.SFTModule"
        assert config["data"]["init_args"]["processor_path"] == config["model"]["init_args"]["model"]["path"]
        if "7b" in path.name:
            assert config["trainer"]["max_epochs"] == 2  # EVA paper, SFT: 2 epochs


def test_tiny_recipe_is_cpu_and_the_learner_model(capsys):
    from eva_core.tiny_model import tiny_model_dir

    config = _resolved(CONFIG_DIR / "sft-tiny.yaml", capsys)
    assert config["model"]["init_args"]["model"]["path"] == str(tiny_model_dir(spec="learner"))
    assert config["trainer"]["accelerator"] == "cpu"
    assert config["data"]["init_args"]["train"]["init_args"]["synthesize"]  # makes its own data


def test_7b_fsdp_recipe_on_the_meta_device(capsys, monkeypatch, qwen_7b_dir):
    monkeypatch.setenv("EVA_QWEN_7B", str(qwen_7b_dir))
    config = _resolved(CONFIG_DIR / "sft-7b-fsdp.yaml", capsys)
    strategy = config["trainer"]["strategy"]
    assert strategy["class_path"].endswith("ModelParallelStrategy")
    assert strategy["init_args"]["data_parallel_size"] == config["trainer"]["devices"] * config["trainer"]["num_nodes"]
    assert strategy["init_args"]["tensor_parallel_size"] == 1
    module = _module(config)
    assert module.optim_spec.lr == 2e-6 and module.lora_spec is None  # the paper's full fine-tuning
    assert module.model_spec.dtype == "float32" and module.sharding_spec.param_dtype == "bfloat16"

    policy = init_empty_model(module.model_spec, module.lora_spec)
    assert next(policy.parameters()).is_meta
    counts = count_parameters(policy)
    assert counts.total == counts.trainable == QWEN_7B_PARAMS == 8_292_166_656  # ~8.29B, vision included

    plan = sharding_plan(policy)
    kinds = [u.kind for u in plan]
    assert kinds.count("decoder_layer") == 28 and kinds.count("vision_block") == 32
    assert [u.kind for u in plan[-3:]] == ["embedding", "output", "root"]
    assert {u.num_params for u in plan if u.kind == "decoder_layer"} == {DECODER_LAYER}
    assert {u.num_params for u in plan if u.kind == "vision_block"} == {VISION_BLOCK}
    assert [u.num_params for u in plan[-3:]] == [EMBEDDING, EMBEDDING, ROOT]
    assert sum(u.num_params for u in plan) == QWEN_7B_PARAMS
    # Per GPU on one 8-GPU node: fp32 weights, fp32 grads and Adam's two moments are sharded,
    # 16 bytes a parameter / 8 = 16.6 GB; the largest gathered unit (the embedding) in bf16 is 1.1 GB.
    world = strategy["init_args"]["data_parallel_size"]
    assert QWEN_7B_PARAMS * 16 / world / 1e9 == pytest.approx(16.58, abs=0.01)
    assert max(u.num_params for u in plan) * 2 / 1e9 == pytest.approx(1.09, abs=0.01)


def test_7b_lora_recipe_on_the_meta_device(capsys, monkeypatch, qwen_7b_dir):
    monkeypatch.setenv("EVA_QWEN_7B", str(qwen_7b_dir))
    config = _resolved(CONFIG_DIR / "sft-7b-lora.yaml", capsys)
    assert config["trainer"]["devices"] == 1
    assert config["trainer"]["accumulate_grad_batches"] * config["data"]["init_args"]["batch_size"] == 8  # paper
    module = _module(config)
    policy = init_empty_model(module.model_spec, module.lora_spec)
    counts = count_parameters(policy)
    assert counts.trainable == LORA_R64 == 161_480_704
    assert counts.total == QWEN_7B_PARAMS + LORA_R64
    trained = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert all("lora_" in n and ".language_model.layers." in n for n in trained)
    assert len(trained) == 28 * 7 * 2  # A and B of 7 projections in 28 layers


@pytest.mark.parametrize("name", ["kto-tiny.yaml", "kto-7b-lora.yaml", "kto-7b-fsdp.yaml"])
def test_kto_recipes(name, capsys, monkeypatch, qwen_7b_dir):
    monkeypatch.setenv("EVA_QWEN_7B", str(qwen_7b_dir))
    monkeypatch.setenv("EVA_KTO_INIT", str(qwen_7b_dir))
    config = _resolved(CONFIG_DIR / name, capsys)
    assert config["model"]["class_path"] == "eva_train.kto.KTOModule"
    assert config["data"]["class_path"] == "eva_train.datamodule.KTODataModule"
    assert config["data"]["init_args"]["train"]["init_args"]["kind"] == "kto"
    assert config["data"]["init_args"]["processor_path"] == config["model"]["init_args"]["model"]["path"]
    module = _module(config)
    assert module.beta == 0.1  # EVA paper, KTO
    if name == "kto-tiny.yaml":
        assert config["trainer"]["accelerator"] == "cpu"
        assert config["data"]["init_args"]["batch_size"] >= 2
        return
    assert module.optim_spec.lr == 2e-6  # EVA paper, KTO
    strategy = config["trainer"].get("strategy")
    ranks = strategy["init_args"]["data_parallel_size"] if isinstance(strategy, dict) else 1
    assert config["data"]["init_args"]["batch_size"] * ranks >= 2  # the KL pairs need 2 rows a step
    assert (module.lora_spec is not None) == (module.reference_spec.kind == "adapters")


def test_grpo_tiny_recipe_builds_its_module(capsys):
    config = _resolved(CONFIG_DIR / "grpo-tiny.yaml", capsys)
    module = _module(config)
    assert module.automatic_optimization is False and module.reference_spec is None  # kl_coef 0, no judge
    assert module.rollout_spec.group_size == 4 and module.reward_config.name == "choice"
    assert module.loss_spec.epsilon == 0.2 and config["trainer"]["accelerator"] == "cpu"

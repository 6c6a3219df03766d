"""Every recipe in configs/ parses; the 7B recipes build Qwen2.5-VL-7B on the meta device and plan its sharding.

Nothing is downloaded: the 7B config.json is written from Qwen2.5-VL-7B-Instruct's published
sizes (`eva_train.model.qwen_shapes`), and the model is instantiated on the meta device (shapes, no memory).
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from eva_train.cli.main import fit_cli, main
from eva_train.cli.usage import config_stages
from eva_train.model.loading import ModelSpec, count_parameters, init_empty_model
from eva_train.model.optim import OptimSpec, build_optimizer, use_fused_adamw
from eva_train.model.qwen_shapes import qwen2_5_vl_config
from eva_train.model.sharding import sharding_plan
from jsonargparse import ArgumentParser

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

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
# Qwen2.5-VL-3B: decoder layer q 2048*2048+2048, k and v 2048*256+256 each, o 2048*2048, MLP
#   3 * 2048*11008, norms 2*2048 -> 4,196,352 + 1,049,088 + 4,194,304 + 67,633,152 + 4,096 = 77,076,992;
#   tied embedding 151936*2048 = 311,164,928; the same 32 vision blocks; root: patch embedding
#   1,505,280 + merger (1280 + 5120*5120+5120 + 5120*2048+2048 = 36,708,608) + final norm 2048
QWEN_3B_PARAMS = 36 * 77_076_992 + 151936 * 2048 + 32 * VISION_BLOCK + 1_505_280 + 36_708_608 + 2048


@pytest.fixture(scope="module")
def qwen_7b_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen2_5_vl_7b_config")
    qwen2_5_vl_config("7b").save_pretrained(folder)
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
    return parser.instantiate(parser.parse_object({"model": config["model"]})).model


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_opens_with_its_purpose_and_command_and_parses(path, capsys, monkeypatch, qwen_7b_dir,
                                                                     tiny_model_dir):
    text = path.read_text()
    assert text.startswith("# "), "a recipe opens with a comment saying what it trains"
    assert f"eva-train fit --config configs/{path.name}" in text.split("\nseed_everything")[0]
    monkeypatch.setenv("EVA_QWEN_7B", str(qwen_7b_dir))
    config = _resolved(path, capsys)
    assert config["model"]["class_path"].startswith("eva_train.")
    assert path.name in config_stages(CONFIG_DIR)[config["model"]["class_path"].split(".")[2]]  # fit --help's list
    if path.name.startswith("sft-"):
        assert config["model"]["class_path"] == "eva_train.stages.sft.SFTModule"
        assert config["data"]["init_args"]["processor_path"] == config["model"]["init_args"]["model"]["path"]
        if "7b" in path.name:
            assert config["trainer"]["max_epochs"] == 2  # EVA paper, SFT: 2 epochs


def test_fit_help_all_is_lightnings_full_option_list(capsys):
    """`eva-train fit --help` is eva-train's short usage; `--help-all` reaches LightningCLI's generated list."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help-all"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "--trainer.max_steps" in text and "--ckpt_path" in text and "--help-all" not in text


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


class _Linear(L.LightningModule):
    """A one-layer model whose optimizer is built as a recipe's would be on a CUDA device."""

    def __init__(self, optim, *, fused: bool) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 8)
        self.optim, self.fused = optim, fused

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        optimizer, _ = build_optimizer(self.layer, self.optim, total_steps=2, fused=self.fused)
        return optimizer


def _fit_two_steps(module, trainer_config: dict) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, precision=trainer_config["precision"],
                        gradient_clip_val=trainer_config.get("gradient_clip_val"), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(torch.randn(4, 8), batch_size=2))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipes_optimizer_steps_under_its_precision_and_clipping(path, capsys, monkeypatch, qwen_7b_dir,
                                                                         tiny_model_dir):
    # Issue 15: on CUDA the fused AdamW made Lightning's bf16-mixed plugin refuse gradient
    # clipping at the first step. Fused AdamW runs on CPU too, so the CUDA choice is tested here.
    monkeypatch.setenv("EVA_QWEN_7B", str(qwen_7b_dir))
    config = _resolved(path, capsys)
    optim = _module(config).optim_spec
    fused = use_fused_adamw("cuda", config["trainer"].get("gradient_clip_val"))
    module = _Linear(optim, fused=fused)
    before = module.layer.weight.detach().clone()
    _fit_two_steps(module, config["trainer"])
    assert not torch.equal(before, module.layer.weight)


def test_a_fused_adamw_with_clipping_is_what_bf16_mixed_refuses():
    # The failure the test above guards against, reproduced on CPU.
    assert use_fused_adamw("cuda", None) and use_fused_adamw("cuda", 0.0)
    assert not use_fused_adamw("cuda", 1.0) and not use_fused_adamw("cpu", None)
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        _fit_two_steps(_Linear(OptimSpec(lr=1e-3), fused=True), {"precision": "bf16-mixed", "gradient_clip_val": 1.0})


def test_3b_shape_on_the_meta_device(tmp_path):
    qwen2_5_vl_config("3b").save_pretrained(tmp_path)
    counts = count_parameters(init_empty_model(ModelSpec(path=str(tmp_path))))
    assert counts.total == QWEN_3B_PARAMS == 3_754_622_976  # the published "3.75B"
    with pytest.raises(ValueError, match="size must be one of"):
        qwen2_5_vl_config("72b")


@pytest.mark.parametrize("name", ["kto-tiny.yaml", "kto-seek.yaml", "kto-7b-lora.yaml", "kto-7b-fsdp.yaml"])
def test_kto_recipes(name, capsys, monkeypatch, qwen_7b_dir):
    monkeypatch.setenv("EVA_QWEN_7B", str(qwen_7b_dir))
    monkeypatch.setenv("EVA_KTO_INIT", str(qwen_7b_dir))
    config = _resolved(CONFIG_DIR / name, capsys)
    assert config["model"]["class_path"] == "eva_train.stages.kto.KTOModule"
    assert config["data"]["class_path"] == "eva_train.data.datamodules.KTODataModule"
    assert config["data"]["init_args"]["train"]["init_args"]["kind"] == "kto"
    assert config["data"]["init_args"]["processor_path"] == config["model"]["init_args"]["model"]["path"]
    module = _module(config)
    assert module.beta == 0.1  # EVA paper, KTO
    if name in ("kto-tiny.yaml", "kto-seek.yaml"):
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


@pytest.mark.parametrize("name", ["grpo-7b-lora.yaml", "grpo-7b-fsdp.yaml"])
def test_grpo_7b_recipes(name, capsys, monkeypatch, qwen_7b_dir):
    monkeypatch.setenv("EVA_GRPO_INIT", str(qwen_7b_dir))
    config = _resolved(CONFIG_DIR / name, capsys)
    assert config["model"]["init_args"]["model"]["path"] == str(qwen_7b_dir)
    assert config["data"]["class_path"] == "eva_train.data.datamodules.RlPromptDataModule"
    source = config["data"]["init_args"]["source"]
    assert source["class_path"] == "eva_train.data.shards.RlShardSource"
    module = _module(config)
    strategy = config["trainer"].get("strategy")
    ranks = strategy["init_args"]["data_parallel_size"] if isinstance(strategy, dict) else 1
    # EVA paper, RL: G 8, 64 episodes a step (8 prompts x G 8), lr 1e-6, one epoch
    assert module.rollout_spec.group_size == 8 and module.optim_spec.lr == 1e-6
    assert config["data"]["init_args"]["prompts_per_step"] * ranks * module.rollout_spec.group_size == 64
    assert config["trainer"]["max_epochs"] == 1 and config["trainer"].get("gradient_clip_val") is None  # manual optimisation
    assert module.loss_spec.epsilon == 0.2 and module.reward_config.format_reward == 0.05
    if ranks > 1:
        assert source["init_args"]["resample"]  # the same prompt count on every rank
        assert strategy["init_args"]["data_parallel_size"] == config["trainer"]["devices"] * config["trainer"]["num_nodes"]
        assert module.lora_spec is None and module.model_spec.dtype == "float32"
    else:
        assert module.lora_spec is not None and module.lora_spec.dropout == 0.0  # ratio 1 on the first pass
        assert config["model"]["init_args"]["reference"]["kind"] == "adapters"


def test_grpo_seek_recipe_builds_its_module(capsys):
    config = _resolved(CONFIG_DIR / "grpo-seek.yaml", capsys)
    module = _module(config)
    assert module.rollout_spec.max_turns >= 3 and module.reward_config.name == "grounded"  # no pay for a lucky guess
    assert module.reward_config.min_frames == 2  # nor for a wide look that one frame happens to fall in
    assert module.rollout_spec.group_size == 8  # EVA paper
    data = config["data"]["init_args"]
    assert data["source"]["class_path"] == "eva_train.data.shards.RlShardSource"  # stages copy failed prompts' videos
    assert "seek-hint" in data["source"]["init_args"]["synthesize"] and "2" in data["source"]["init_args"]["synthesize"]
    assert data["stages"]["dir"] and config["trainer"]["max_epochs"] >= 2  # at least one data refresh
    assert config["trainer"]["reload_dataloaders_every_n_epochs"] == 1
    assert any(c["class_path"] == "eva_train.callbacks.failures.FailureLog" for c in config["trainer"]["callbacks"])
    # the validation gate: greedy episodes on validation prompts (never a training or held-out seed), best kept
    assert "101" in data["val"]["init_args"]["synthesize"] and config["trainer"]["val_check_interval"]
    gate = [c["init_args"] for c in config["trainer"]["callbacks"] if c["init_args"].get("monitor")]
    assert [(g["monitor"], g["mode"], g["save_top_k"], g["filename"]) for g in gate] == [
        ("val/accuracy", "max", 1, "best")]


def _with(config: dict, *, views: list[str], epochs: int, name: str, path: str | None = None) -> dict:
    """`config` with its views (train and val), epochs, run name and (given) model path replaced."""
    config = copy.deepcopy(config)
    for split in ("train", "val"):
        config["data"]["init_args"][split]["init_args"]["views"] = views
    config["trainer"]["max_epochs"] = epochs
    config["trainer"]["logger"]["init_args"]["name"] = name
    if path is not None:
        config["model"]["init_args"]["model"]["path"] = config["data"]["init_args"]["processor_path"] = path
    return config


def test_seek_agent_plans_then_reads_and_the_baselines_differ_only_in_their_view(capsys, monkeypatch, tmp_path):
    """Same architecture, items, batch and optimizer (issue 14's fair comparison). The agent's SFT is
    two fits: the first turns on the random planner for 5 epochs (400 steps: planning), then, from
    its export, first turns, look counterparts and trajectories in mixed batches for one epoch (240
    steps); each uniform baseline trains from the SFT agent on its view and the look counterparts,
    mixed, for 2 epochs (320 steps), its validation on its view alone."""
    plan = _resolved(CONFIG_DIR / "sft-seek-plan.yaml", capsys)
    assert plan["data"]["init_args"]["train"]["init_args"]["views"] == ["plan"]
    assert plan["model"]["init_args"]["model"]["path"].endswith("-seed0-planner")  # random weights, clock-time tokens
    assert plan["trainer"]["max_epochs"] == 5  # 80 steps an epoch
    monkeypatch.setenv("EVA_SFT_INIT", str(tmp_path / "plan-model"))
    agent = _resolved(CONFIG_DIR / "sft-seek.yaml", capsys)
    assert agent["data"]["init_args"]["window_batches"] == 1  # the views mix within a batch
    mixed = _with(plan, views=["plan", "look", "agent"], epochs=1, name="sft-seek", path=str(tmp_path / "plan-model"))
    mixed["data"]["init_args"]["val"]["init_args"]["views"] = ["agent"]
    mixed["data"]["init_args"]["window_batches"] = 1
    assert agent == mixed
    monkeypatch.setenv("EVA_UNIFORM_INIT", str(tmp_path / "sft-model"))
    for n in (8, 32):
        uniform = _resolved(CONFIG_DIR / f"sft-seek-uniform{n}.yaml", capsys)
        expected = _with(agent, views=[f"uniform-{n}", "look"], epochs=2, name=f"sft-seek-uniform{n}",
                         path=str(tmp_path / "sft-model"))
        expected["data"]["init_args"]["val"]["init_args"]["views"] = [f"uniform-{n}"]
        assert uniform == expected

"""The GRPO stage on the tiny Qwen2.5-VL: rollouts with the frame tool for real, rewards, and
optimizer steps after which every trainable parameter moved and the reference did not."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from eva_data import rewards
from eva_data.rewards import RewardConfig
from eva_train.data.datamodules import RlPromptDataModule
from eva_train.data.prompts import load_rl_items
from eva_train.model.loading import LoraSpec, ModelSpec
from eva_train.model.optim import OptimSpec
from eva_train.objectives.reference import ModelReference, ReferenceSpec
from eva_train.stages.grpo import GRPOLossSpec, GRPOModule, RolloutSpec
from grpo_helpers import QUESTION, ForceToolCalls, write_rl_folder


@pytest.fixture(scope="module")
def rl_folder(tmp_path_factory):
    return write_rl_folder(tmp_path_factory.mktemp("rl"), [QUESTION, QUESTION])


def test_load_rl_items_needs_the_videos(rl_folder, tmp_path):
    items = load_rl_items(rl_folder)
    assert [i.prompt.id for i in items] == ["rl-0", "rl-1"] and items[1].video == rl_folder / "videos" / "v1.mp4"
    with pytest.raises(FileNotFoundError, match="eva-data synth --records"):
        load_rl_items(tmp_path)


def test_grpo_fit_moves_every_trainable_parameter(tmp_path, rl_folder, tiny_model_dir, one_torch_thread, monkeypatch):
    # Every forced episode ends unanswered at the turn limit, so an answer-based reward is 0.05 for
    # all and no group has a signal; this one prefers sample 0 of each group (ids end in "g0").
    monkeypatch.setitem(rewards.REWARDS, "first_sample", lambda x: float(x.episode.episode_id.endswith("g0")))
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=True)
    module = GRPOModule(spec, optim=OptimSpec(lr=1e-3, warmup_ratio=0.0, schedule="constant"),
                        rollout=RolloutSpec(group_size=2, max_turns=2, max_new_tokens=8, seed=1),
                        loss=GRPOLossSpec(kl_coef=0.1, micro_batch_size=2, passes=2, mask_truncated=False),
                        reward=RewardConfig(name="first_sample"))
    module.configure_model()
    assert isinstance(module.reference, ModelReference)
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    reference_before = {n: p.detach().clone() for n, p in module.reference_model.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                        default_root_dir=tmp_path, callbacks=[ForceToolCalls()], enable_checkpointing=False)
    trainer.fit(module, RlPromptDataModule(str(rl_folder), prompts_per_step=2))
    assert trainer.global_step == 4  # 2 rollout batches x 2 passes
    wrong = [n for n, p in module.policy.named_parameters() if torch.equal(p.detach(), before[n]) == p.requires_grad]
    assert not wrong, f"{len(wrong)} parameters moved though frozen or stayed though trained, e.g. {wrong[:5]}"
    assert all(torch.equal(p, reference_before[n]) for n, p in module.reference_model.named_parameters())
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/reward_mean")]
    assert len(rows) == 2
    first = rows[0]
    # sample 0 scores 1, sample 1 the format floor 0.05 (it called the tool): mean 1.05 / 2
    assert float(first["train/reward_mean"]) == pytest.approx(0.525) and float(first["train/zero_advantage_groups"]) == 0
    assert float(first["train/tool_call_rate"]) == 1.0 and float(first["train/rounds"]) == 2.0
    assert float(first["train/visual_tokens"]) > 0
    for column in ("train/reward_std", "train/accuracy", "train/format_rate", "train/kl", "train/clip_fraction",
                   "train/ratio", "train/rollout_s", "train/tool_s", "train/reward_s", "train/train_s", "train/lr"):
        assert first[column] != "", column


def test_csv_reward_judges_with_the_frozen_reference(rl_folder, tiny_model_dir, one_torch_thread):
    from eva_core.frame_select import frame_select

    module = GRPOModule(ModelSpec(path=str(tiny_model_dir), dtype="float32"), reward=RewardConfig(name="csv"),
                        rollout=RolloutSpec(group_size=2))
    module.configure_model()
    assert isinstance(module.reference, ModelReference)  # kl_coef 0, but the judge needs pi_ref
    judge = module._judge()
    selection = frame_select(rl_folder / "videos" / "v0.mp4", start_time=0.0, end_time=4.0, nframes=2, resize=0.25)
    calls = []
    forward = module.reference_model.forward
    module.reference_model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    answer = judge(QUESTION, list(selection.frames.unbind(0)), selection.labels)
    assert answer is None or isinstance(answer, str)
    assert calls  # the reference model, not the policy, generated the verdict
    with pytest.raises(ValueError, match="cannot be precomputed"):
        GRPOModule(ModelSpec(path=str(tiny_model_dir)), reward=RewardConfig(name="csv"),
                   reference=ReferenceSpec(kind="precomputed", path="x.json"))


@pytest.mark.parametrize("policy_judges", [True, False])
def test_the_csv_judge_runs_inside_its_models_gather(rl_folder, monkeypatch, policy_judges):
    """Under FSDP2 every judge call is a chain of collectives that ranks make as many times as
    they have right answers: `play_and_score` runs the judge with its model's weights gathered,
    inside the rollouts' gather when the policy judges (LoRA), in its own gather after the
    policy's is released when a frozen copy judges."""
    from contextlib import contextmanager

    from eva_core.agent import AgentConfig
    from eva_core.backends.forced import frame_select_call
    from eva_core.scripted import ScriptedPolicy
    from eva_train.rl import scoring

    events = []

    @contextmanager
    def gathered(model):
        events.append(("gather", model))
        yield model
        events.append(("release", model))

    def judge(question, frames, labels):
        events.append(("judge", len(frames)))
        return "A"

    monkeypatch.setattr(scoring, "gathered_for_rollouts", gathered)
    policy, copy = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    engine = ScriptedPolicy([frame_select_call(0.0, 4.0, 2, 0.25), "<answer>A</answer>"])  # right, after a call
    played = scoring.play_and_score(engine, load_rl_items(rl_folder), group_size=1, step=0,
                                    config=AgentConfig(max_turns=2, tool_threads=1), reward=RewardConfig(name="csv"),
                                    judge=judge, model=policy, judge_model=policy if policy_judges else copy)
    assert [s.reward.total for s in played.scored] == [1.0, 1.0]  # the judge saw the 2 frames and agreed
    judged = [("judge", 2), ("judge", 2)]
    if policy_judges:
        assert events == [("gather", policy), *judged, ("release", policy)]
    else:
        assert events == [("gather", policy), ("release", policy), ("gather", copy), *judged, ("release", copy)]


def test_a_rollout_trains_exactly_the_sampled_replies(rl_folder, tiny_model_dir, one_torch_thread):
    """The GRPO path's mask on a rendered 2-turn episode: the trained tokens decode to the model's
    own replies, turn after turn; the system and user turns, the tool turn with its frames and the
    chat template's headers carry no loss."""
    from eva_core.backends.forced import AppendToolCall, frame_select_call

    module = GRPOModule(ModelSpec(path=str(tiny_model_dir), dtype="float32"),
                        rollout=RolloutSpec(group_size=2, max_turns=2, max_new_tokens=6, seed=2),
                        loss=GRPOLossSpec(mask_truncated=False))  # every episode ends at the turn limit
    module.configure_model()
    engine = module.engine
    call = "\n" + frame_select_call(0.0, 4.0, 2, 0.25)
    module.engine = AppendToolCall(engine, call)
    module.engine.suppress = engine.suppress
    items = load_rl_items(rl_folder)[:1]
    rollout = module.rollout(items)
    tokenizer = module.processor.tokenizer
    for scored, encoded in zip(rollout.scored, rollout.encoded, strict=True):
        episode, conversation = scored.episode, encoded.conversation
        assert episode.rounds == 2 and len(episode.steps[0].frames) == 2
        ids, trained = conversation.input_ids, conversation.trained
        runs, start = [], None  # the trained spans, in order
        for t in range(len(ids) + 1):
            on = t < len(ids) and bool(trained[t])
            if on and start is None:
                start = t
            elif not on and start is not None:
                runs.append(ids[start:t].tolist())
                start = None
        assert runs == [s.tokens.completion_ids for s in episode.steps]
        untrained = tokenizer.decode(ids[~trained])
        assert QUESTION in untrained and "<|vision_start|>" in untrained and "<|im_start|>user" in untrained
        assert int((ids[trained] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == 0
        # the appended call is text the wrapper added after sampling: neither sampled nor trained
        assert all("frame_select" not in tokenizer.decode(r) for r in runs)


def test_truncated_episodes_carry_no_loss_by_default(rl_folder, tiny_model_dir, one_torch_thread):
    """Episodes ended by the turn limit: their rewards count in the group, their tokens train
    nothing (`mask_truncated`, the default) unless the config keeps them."""
    from eva_core.backends.forced import AppendToolCall, frame_select_call
    from eva_core.episode import StopReason

    module = GRPOModule(ModelSpec(path=str(tiny_model_dir), dtype="float32"),
                        rollout=RolloutSpec(group_size=2, max_turns=2, max_new_tokens=6, seed=2))
    module.configure_model()
    module.engine = AppendToolCall(engine := module.engine, "\n" + frame_select_call(0.0, 4.0, 2, 0.25))
    module.engine.suppress = engine.suppress
    items = load_rl_items(rl_folder)[:1]
    rollout = module.rollout(items)
    assert all(s.episode.stop_reason == StopReason.MAX_TURNS_EXCEEDED and s.episode.truncated for s in rollout.scored)
    assert rollout.metrics["truncated_rate"] == 1.0 and len(rollout.encoded) == 2
    assert all(not e.conversation.trained.any() for e in rollout.encoded)
    module.loss_spec.mask_truncated = False
    kept = module.rollout(items)
    assert all(e.conversation.trained.any() for e in kept.encoded)


def test_a_blank_image_row_changes_nothing_for_the_other_rows(rl_folder, tiny_model_dir, one_torch_thread):
    """The row FSDP2 ranks add to a micro-batch without frames: the vision tower runs, the other
    rows' log-probabilities and the gradients of their loss are unchanged."""
    from eva_train.encoding.collate import collate
    from eva_train.encoding.episodes import blank_image_row
    from eva_train.objectives.logprobs import policy_logprobs

    module = GRPOModule(ModelSpec(path=str(tiny_model_dir), dtype="float32"),
                        rollout=RolloutSpec(group_size=2, max_turns=1, max_new_tokens=6, seed=2),
                        loss=GRPOLossSpec(mask_truncated=False))
    module.configure_model()
    rollout = module.rollout(load_rl_items(rl_folder)[:1])  # one turn, no call: no frames
    rows = [e.conversation for e in rollout.encoded]
    assert all(r.pixel_values is None for r in rows)
    pad = module.processor.tokenizer.pad_token_id
    blank = blank_image_row(module.processor)
    assert int(blank.image_grid_thw.prod()) // 4 == 1 and not blank.trained.any()

    def run(conversations):
        module.policy.zero_grad(set_to_none=True)
        batch = collate(conversations, pad_id=pad)
        logps = policy_logprobs(module.policy, batch)[:len(rows)]
        logps.sum().backward()
        grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
        return logps.detach(), grads

    plain, plain_grads = run(rows)
    padded, padded_grads = run([*rows, blank])
    assert torch.allclose(plain, padded, atol=1e-6)
    visual = [n for n in padded_grads if ".visual." in f".{n}"]
    assert visual and not any(".visual." in f".{n}" for n in plain_grads)  # the tower ran, with zero gradient
    assert all(padded_grads[n].abs().max() == 0 for n in visual)
    assert all(torch.allclose(plain_grads[n], padded_grads[n], atol=1e-6) for n in plain_grads)


def test_pi_old_is_the_training_forward_not_the_sampler(rl_folder, tiny_model_dir, one_torch_thread):
    """A sampler whose log-probs are 0.3 nats off (bf16 kernels, KV cache): the ratio is still
    exactly 1 on the first pass, the gap is measured, and the capped correction weighs by it."""
    from eva_core.backends.forced import AppendToolCall, frame_select_call
    from eva_train.encoding.microbatches import lockstep_micro_batches

    module = GRPOModule(ModelSpec(path=str(tiny_model_dir), dtype="float32"),
                        rollout=RolloutSpec(group_size=2, max_turns=2, max_new_tokens=6, seed=2),
                        loss=GRPOLossSpec(mask_truncated=False))
    module.configure_model()
    module.engine = AppendToolCall(engine := module.engine, "\n" + frame_select_call(0.0, 4.0, 2, 0.25))
    module.engine.suppress = engine.suppress
    rollout = module.rollout(load_rl_items(rl_folder)[:1])
    for e in rollout.encoded:
        e.sampled_logprobs[e.conversation.trained] += 0.3  # the sampler's view of the same tokens
    rollout.advantages = torch.tensor([1.0, 0.5])  # a loss of -(n0 + 0.5 n1) / (n0 + n1) at ratio 1
    micro = lockstep_micro_batches(rollout.encoded, 4, conversation=lambda e: e.conversation)[0]
    loss, metrics = module.micro_batch_loss(micro, rollout.advantages, normalizer=None, measure_gap=True)
    assert metrics["ratio"].item() == 1.0 and metrics["clip_fraction"].item() == 0.0
    assert metrics["logp_gap_mean"].item() == pytest.approx(0.3, abs=1e-4)
    assert metrics["logp_gap_max"].item() == pytest.approx(0.3, abs=1e-4)
    assert metrics["logp_gap_share"].item() == 1.0  # |e^-0.3 - 1| = 0.26 > 0.1 on every token
    # several passes: pi_old from a no-grad forward before the first, the same numbers
    old, _ = module.forward_logps(micro)
    _, again = module.micro_batch_loss(micro, rollout.advantages, normalizer=None, old=old)
    assert again["ratio"].item() == pytest.approx(1.0, abs=1e-6)
    # the capped importance-sampling correction: every surrogate term weighed by e^-0.3
    module.loss_spec.importance_sampling_cap = 3.0
    weighted, _ = module.micro_batch_loss(micro, rollout.advantages, normalizer=None)
    assert weighted.item() == pytest.approx(loss.item() * math.exp(-0.3), rel=1e-4)


def test_a_non_finite_gradient_norm_skips_the_optimizer_step(rl_folder, tiny_model_dir, one_torch_thread,
                                                             monkeypatch, recwarn):
    """The first batch's norm is NaN: no update, no schedule step, a counted warning; the step is
    not counted either, so the next batch makes step 1."""
    import eva_train.stages.grpo as grpo

    monkeypatch.setitem(rewards.REWARDS, "first_sample", lambda x: float(x.episode.episode_id.endswith("g0")))
    module = GRPOModule(ModelSpec(path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=True),
                        optim=OptimSpec(lr=1e-3, warmup_ratio=0.0, schedule="constant"),
                        rollout=RolloutSpec(group_size=2, max_turns=2, max_new_tokens=8, seed=1),
                        loss=GRPOLossSpec(micro_batch_size=2, mask_truncated=False),
                        reward=RewardConfig(name="first_sample"))
    norms = iter([float("nan"), 0.5])
    monkeypatch.setattr(grpo, "clip_grad_norm", lambda model, max_norm: next(norms))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters() if p.requires_grad}
    after_batch = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            after_batch.append((trainer.global_step, all(torch.equal(p, before[n]) for n, p in
                                                         pl_module.policy.named_parameters() if p.requires_grad)))

    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(rl_folder.parent),
                        callbacks=[ForceToolCalls(), Watch()], enable_checkpointing=False)
    trainer.fit(module, RlPromptDataModule(str(rl_folder), prompts_per_step=2))
    assert after_batch == [(0, True), (1, False)] and module.skipped_steps == 1
    assert any("gradient norm nan; the optimizer step is skipped (1 so far)" in str(w.message) for w in recwarn)


def test_grpo_refuses_lora_dropout(tiny_model_dir):
    with pytest.raises(ValueError, match=r"GRPO needs lora.dropout: 0 \(got 0.05\)"):
        GRPOModule(ModelSpec(path=str(tiny_model_dir)), lora=LoraSpec(r=4, alpha=8, dropout=0.05))

"""GRPO's pure pieces against hand computations: group advantages, the clipped surrogate with its
KL penalty, masks and aggregations, lockstep micro-batches, the step's normaliser and record."""

from __future__ import annotations

import math

import pytest
import torch
from eva_train.encoding import microbatches
from eva_train.encoding.episodes import EncodedEpisode
from eva_train.encoding.masking import EncodedConversation
from eva_train.encoding.microbatches import lockstep_micro_batches
from eva_train.objectives.losses import grpo_loss
from eva_train.rl import step as step_module
from eva_train.rl.advantages import group_advantages
from eva_train.rl.rollouts import RolloutSpec
from eva_train.rl.step import StepRecord, loss_normalizer

# --- advantages ----------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 1.0, 0.05, 0.05, 0.05])
    adv = group_advantages(rewards, 4, eps=0.0)
    # group 0: mean 0.5, sample std sqrt(4 * 0.25 / 3) = sqrt(1/3) -> +-0.5 * sqrt(3) = +-0.8660254
    s3 = 0.5 * math.sqrt(3.0)
    # group 1: all equal -> 0
    # group 2: mean (1 + 0.15) / 4 = 0.2875; deviations 0.7125, -0.2375 x3;
    #          std sqrt((0.7125^2 + 3 * 0.2375^2) / 3) = sqrt((0.50765625 + 0.16921875) / 3) = sqrt(0.225625) = 0.475
    expected = [s3, -s3, -s3, s3, 0, 0, 0, 0, 0.7125 / 0.475, -0.2375 / 0.475, -0.2375 / 0.475, -0.2375 / 0.475]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    # without the std (Dr. GRPO): the centred rewards
    plain = group_advantages(rewards, 4, scale_by_std=False)
    assert plain.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, 0.7125, -0.2375, -0.2375, -0.2375],
                                           abs=1e-6)


def test_equal_groups_get_exactly_zero():
    adv = group_advantages(torch.tensor([0.3, 0.3, 1.0, 1.0]), 2)
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert group_advantages(torch.tensor([1, 0]), 2, eps=0.0).tolist() == pytest.approx([0.7071068, -0.7071068])


def test_group_advantages_checks():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size must be an integer >= 2"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match=r"rewards must be \[B\]"):
        group_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="finite"):
        group_advantages(torch.tensor([0.0, float("nan")]), 2)


# --- the clipped surrogate ----------------------------------------------------------------------------

def case(ratios=((1.5, 0.5, 1.0), (1.1, 0.7, 3.0))):
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    logps = (old + torch.tensor(ratios).log()).requires_grad_()
    return logps, old, torch.tensor([1.0, -2.0]), torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_grpo_surrogate_token_mean_by_hand():
    logps, old, adv, mask = case()
    loss, metrics = grpo_loss(logps, old, adv, mask)
    # row 0, A = 1:  rho 1.5 -> min(1.5, 1.2) = 1.2 (clipped high); 0.5 -> min(0.5, 0.8) = 0.5; 1.0 -> 1
    # row 1, A = -2: rho 1.1 -> min(-2.2, -2.2) = -2.2; 0.7 -> min(-1.4, -1.6) = -1.6 (clipped low);
    #                the third token (rho 3) is masked out
    # loss = -(1.2 + 0.5 + 1 - 2.2 - 1.6) / 5 = 1.1 / 5 = 0.22
    assert loss.item() == pytest.approx(0.22, abs=1e-6)
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 5)
    assert metrics["ratio"].item() == pytest.approx((1.5 + 0.5 + 1 + 1.1 + 0.7) / 5, abs=1e-6)
    assert metrics["trained_tokens"].item() == 5 and "kl" not in metrics and "entropy" not in metrics
    assert not any(v.requires_grad for v in metrics.values())
    loss.backward()
    # dL/dlogp = -A rho / 5 where unclipped, 0 where clipped or masked
    expected = [[0.0, -0.5 / 5, -1.0 / 5], [2.0 * 1.1 / 5, 0.0, 0.0]]
    assert logps.grad.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_grpo_clip_higher_and_the_global_token_count():
    logps, old, adv, mask = case()
    loss, metrics = grpo_loss(logps, old, adv, mask, epsilon_high=0.6)
    # rho 1.5 < 1.6 is no longer clipped: -(1.5 + 0.5 + 1 - 2.2 - 1.6) / 5 = 0.8 / 5 = 0.16
    assert loss.item() == pytest.approx(0.16, abs=1e-6)
    assert metrics["clip_fraction"].item() == pytest.approx(1 / 5)
    # 20 tokens over the whole step: 1.1 / 20
    assert grpo_loss(logps, old, adv, mask, normalizer=20)[0].item() == pytest.approx(0.055, abs=1e-6)


def test_grpo_sequence_mean_and_constant_by_hand():
    logps, old, adv, mask = case()
    loss, _ = grpo_loss(logps, old, adv, mask, aggregation="sequence-mean")
    # row 0: -(1.2 + 0.5 + 1) / 3 = -0.9; row 1: -(-2.2 - 1.6) / 2 = 1.9; (-0.9 + 1.9) / 2 = 0.5
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    assert grpo_loss(logps, old, adv, mask, aggregation="sequence-mean", normalizer=4)[0].item() == pytest.approx(
        0.25, abs=1e-6)  # (-0.9 + 1.9) / 4 sequences in the step
    # Dr. GRPO: the masked sum over a constant, 1.1 / 4
    loss, _ = grpo_loss(logps, old, adv, mask, aggregation="constant", normalizer=4.0)
    assert loss.item() == pytest.approx(0.275, abs=1e-6)


def test_grpo_k3_penalty_by_hand():
    logps = torch.tensor([[-1.0, -1.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-1.0 + math.log(2.0), -1.0 - math.log(2.0), -1.0]])
    mask = torch.tensor([[1, 1, 1]])
    entropy = torch.tensor([[0.5, 1.0, 1.5]])
    # rho = 1 and A = 0: the surrogate is 0; k3 = e^d - d - 1 with d = ref - logp:
    # d = ln 2 -> 2 - 0.6931472 - 1 = 0.3068528; d = -ln 2 -> 0.5 + 0.6931472 - 1 = 0.1931472; d = 0 -> 0
    kl_mean = (0.3068528 + 0.1931472) / 3  # = 0.5 / 3
    loss, metrics = grpo_loss(logps, logps.detach(), torch.zeros(1), mask, ref_logps=ref, kl_coef=0.1,
                              entropy=entropy)
    assert loss.item() == pytest.approx(0.1 * kl_mean, abs=1e-7)
    assert metrics["kl"].item() == pytest.approx(kl_mean, abs=1e-7)
    assert metrics["entropy"].item() == pytest.approx(1.0)
    loss.backward()
    # d k3 / d logp = 1 - e^d: 1 - 2 = -1, 1 - 0.5 = 0.5, 0; times 0.1 / 3
    assert logps.grad.tolist() == [pytest.approx([-0.1 / 3, 0.05 / 3, 0.0], abs=1e-7)]
    # coefficient 0: the KL is still measured but not trained on
    loss, metrics = grpo_loss(logps, logps.detach(), torch.zeros(1), mask, ref_logps=ref, kl_coef=0.0)
    assert loss.item() == 0.0 and metrics["kl"].item() == pytest.approx(kl_mean, abs=1e-7)


def test_grpo_dual_clip_bounds_a_negative_advantage_by_hand():
    # row 1 (A = -2) unmasked, its third token at rho 5: -min(5 * -2, 1.2 * -2) = 10 without dual-clip
    logps, old, adv, _ = case(ratios=((1.0, 1.0, 1.0), (1.0, 1.0, 5.0)))
    mask = torch.tensor([[0, 0, 0], [0, 0, 1]])
    loss, metrics = grpo_loss(logps, old, adv, mask, dual_clip=None)
    assert loss.item() == pytest.approx(10.0, abs=1e-5)
    # C = 3: min(10, 3 * 2) = 6, and the token no longer trains (its gradient is cut)
    loss, metrics = grpo_loss(logps, old, adv, mask)
    assert loss.item() == pytest.approx(6.0, abs=1e-5)
    assert metrics["dual_clip_fraction"].item() == 1.0
    loss.backward()
    assert logps.grad.abs().sum().item() == 0.0
    # a positive advantage is never dual-clipped: row 0 at rho 5, A = 1 -> -min(5, 1.2) = -1.2
    logps, old, adv, _ = case(ratios=((1.0, 1.0, 5.0), (1.0, 1.0, 1.0)))
    loss, metrics = grpo_loss(logps, old, adv, torch.tensor([[0, 0, 1], [0, 0, 0]]))
    assert loss.item() == pytest.approx(-1.2, abs=1e-5) and metrics["dual_clip_fraction"].item() == 0.0
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        grpo_loss(logps, old, adv, torch.ones(2, 3), dual_clip=1.0)


def test_grpo_log_ratio_clamp_keeps_an_exploded_token_finite():
    old = torch.tensor([[-100.0, -1.0]])
    logps = torch.tensor([[0.0, -1.0]], requires_grad=True)  # log-ratio 100: e^100 overflows float32
    mask, adv = torch.tensor([[1, 1]]), torch.tensor([-1.0])
    loss, metrics = grpo_loss(logps, old, adv, mask, dual_clip=None, log_ratio_clamp=None)
    assert not torch.isfinite(loss)
    # clamped to 20: rho = e^20 = 4.85e8; A = -1 -> -min(-4.85e8, -0.8) = 4.85e8; the other token: 1
    loss, metrics = grpo_loss(logps, old, adv, mask, dual_clip=None)
    assert loss.item() == pytest.approx((math.exp(20.0) + 1.0) / 2, rel=1e-5)
    assert metrics["ratio"].item() == pytest.approx((math.exp(20.0) + 1.0) / 2, rel=1e-5)
    # with dual-clip as well (the default): (3 + 1) / 2 = 2
    loss, _ = grpo_loss(logps, old, adv, mask)
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logps.grad).all()


def test_grpo_token_weights_scale_the_surrogate_not_the_kl():
    logps, old, adv, mask = case()
    weights = torch.tensor([[0.5, 1.0, 1.0], [2.0, 1.0, 1.0]])
    loss, _ = grpo_loss(logps, old, adv, mask, token_weights=weights)
    # surrogate terms as in the token-mean case, the first token of each row weighted:
    # -(0.5 * 1.2 + 0.5 + 1 + 2 * -2.2 - 1.6) / 5 = -(0.6 + 1.5 - 4.4 - 1.6) / 5 = 3.9 / 5 = 0.78
    assert loss.item() == pytest.approx(0.78, abs=1e-6)
    with pytest.raises(ValueError, match="token_weights must be"):
        grpo_loss(logps, old, adv, mask, token_weights=torch.ones(2, 2))


def test_grpo_without_sampled_tokens_is_zero_and_differentiable():
    logps, old, adv, _ = case()
    loss, metrics = grpo_loss(logps, old, adv, torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0 and metrics["trained_tokens"].item() == 0
    assert logps.grad.abs().sum().item() == 0.0


def test_grpo_loss_checks():
    logps, old, adv, mask = case()
    with pytest.raises(ValueError, match="needs ref_logps"):
        grpo_loss(logps, old, adv, mask, kl_coef=0.1)
    with pytest.raises(ValueError, match=r"advantages must be \[B\] = \[2\]"):
        grpo_loss(logps, old, adv[:1], mask)
    with pytest.raises(ValueError, match="old_logps must be"):
        grpo_loss(logps, old[:, :2], adv, mask)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        grpo_loss(logps, old, adv, mask, aggregation="mean")
    with pytest.raises(ValueError, match="needs the normalizer"):
        grpo_loss(logps, old, adv, mask, aggregation="constant")
    with pytest.raises(ValueError, match="epsilon must be"):
        grpo_loss(logps, old, adv, mask, epsilon=0.0)


# --- lockstep micro-batches, the step's normaliser, the step record ------------------------------


def conversation(tokens: int, *, trained: int = 1, image: bool = False) -> EncodedConversation:
    """A conversation of `tokens` ids whose last `trained` are trained; with one 1-token image when `image`."""
    mask = torch.zeros(tokens, dtype=torch.bool)
    mask[tokens - trained:] = True
    types = torch.zeros(tokens, dtype=torch.int32)
    if not image:
        return EncodedConversation(torch.arange(tokens), mask, types, None, None)
    types[1] = 1
    return EncodedConversation(torch.arange(tokens), mask, types, torch.zeros(4, 8), torch.tensor([[1, 2, 2]]),
                               image_spans=[(0, 3)])


def other_ranks(monkeypatch, module, *extra_rows):
    """Make `module.all_gather_rows` answer as rank 0 of 1 + len(extra_rows) ranks, the others
    contributing `extra_rows[r]`."""
    monkeypatch.setattr(module, "all_gather_rows", lambda rows: ([*rows, *extra_rows], 0))


def test_one_process_cuts_the_rows_in_order():
    rows = [conversation(3) for _ in range(5)]
    micro = lockstep_micro_batches(rows, 2)
    # ceil(5 / 2) = 3 micro-batches, rows 0-1, 2-3, 4; no filler, no blank row
    assert [(m.start, len(m.rows), m.weight) for m in micro] == [(0, 2, 1.0), (2, 2, 1.0), (4, 1, 1.0)]
    assert all(m.conversations == m.rows for m in micro)
    assert lockstep_micro_batches([], 2) == []
    with pytest.raises(ValueError, match="size must be >= 1"):
        lockstep_micro_batches(rows, 0)


def test_fillers_repeat_the_last_micro_batch_with_weight_zero(monkeypatch):
    other_ranks(monkeypatch, microbatches, 4)  # another rank runs 4 micro-batches
    rows = [("a", conversation(3)), ("b", conversation(3)), ("c", conversation(3))]
    micro = lockstep_micro_batches(rows, 2, conversation=lambda r: r[1])
    # 2 real micro-batches (rows a-b, c), then 2 fillers repeating c
    assert [([r[0] for r in m.rows], m.start, m.weight) for m in micro] == [
        (["a", "b"], 0, 1.0), (["c"], 2, 1.0), (["c"], 2, 0.0), (["c"], 2, 0.0)]
    assert micro[2].conversations == [rows[2][1]]


def test_a_rank_without_rows_cannot_keep_in_lockstep(monkeypatch):
    other_ranks(monkeypatch, microbatches, 1)
    with pytest.raises(RuntimeError, match="rank 0 has no row to train on while another rank has 1"):
        lockstep_micro_batches([], 2)


def test_the_blank_row_goes_only_where_no_image_is():
    blank = conversation(3, trained=0, image=True)
    rows = [conversation(4), conversation(4, image=True), conversation(4), conversation(4)]
    micro = lockstep_micro_batches(rows, 2, blank=blank)
    # rows 0-1 hold an image; rows 2-3 do not and get the blank row after them
    assert micro[0].conversations == rows[:2]
    assert micro[1].conversations == [*rows[2:], blank] and micro[1].rows == rows[2:]


def episode(tokens: int, trained: int) -> EncodedEpisode:
    return EncodedEpisode(conversation(tokens, trained=trained), torch.zeros(tokens))


def test_loss_normalizer_counts_every_rank(monkeypatch):
    encoded = [episode(6, 3), episode(5, 2)]
    assert loss_normalizer(encoded, aggregation="token-mean") == 5.0  # 3 + 2 sampled tokens
    assert loss_normalizer(encoded, aggregation="sequence-mean") == 2.0
    assert loss_normalizer(encoded, aggregation="constant", constant=400.0) == 400.0
    other_ranks(monkeypatch, step_module, (7, 1))  # another rank: 7 tokens in 1 episode
    # (5 + 7) / 2 ranks = 6 tokens; (2 + 1) / 2 = 1.5 episodes
    assert loss_normalizer(encoded, aggregation="token-mean") == 6.0
    assert loss_normalizer(encoded, aggregation="sequence-mean") == 1.5
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        loss_normalizer(encoded, aggregation="mean")


def test_callbacks_take_the_record_from_the_step_outputs():
    record = StepRecord(step=3, scored=(), group_size=2, rollout=RolloutSpec(group_size=2), model="tiny")
    assert StepRecord.from_outputs({"record": record}) is record
    with pytest.raises(TypeError, match="GRPO steps only"):
        StepRecord.from_outputs(torch.tensor(1.0))  # an SFT or KTO step's loss
    with pytest.raises(ValueError, match="do not make groups of 0"):
        StepRecord(step=0, scored=(), group_size=0, rollout=RolloutSpec(), model="tiny")


def test_clip_grad_norm_by_hand():
    from eva_train.model.optim import clip_grad_norm

    model = torch.nn.Linear(2, 1, bias=True)
    model.weight.grad = torch.tensor([[3.0, 0.0]])
    model.bias.grad = torch.tensor([4.0])
    assert clip_grad_norm(model, None) == pytest.approx(5.0)  # sqrt(3^2 + 4^2), nothing scaled
    assert model.weight.grad.tolist() == [[3.0, 0.0]]
    assert clip_grad_norm(model, 1.0) == pytest.approx(5.0)  # scaled by 1 / 5
    assert model.weight.grad.tolist() == [pytest.approx([0.6, 0.0], abs=1e-6)]
    assert model.bias.grad.tolist() == pytest.approx([0.8], abs=1e-6)
    model.bias.grad = torch.tensor([float("inf")])
    assert clip_grad_norm(model, 1.0) == float("inf")

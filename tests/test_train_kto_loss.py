"""The KTO loss (`eva_train.objectives.losses.kto_loss`): by hand, against TRL's KTOTrainer on the same numbers, error paths."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from eva_train.objectives.losses import KTOWeightWarning, kto_loss, kto_weight_ratio, sequence_logps


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_kto_loss_by_hand():
    policy = torch.tensor([-10.0, -12.0, -9.0])
    reference = torch.tensor([-11.0, -11.0, -9.5])
    desirable = torch.tensor([True, False, True])
    # KL pairs: policy - reference = 0.5, 1.0, -0.3 -> mean 0.4 = z0 (positive, kept)
    kl_policy = torch.tensor([-5.0, -6.0, -7.3])
    kl_reference = torch.tensor([-5.5, -7.0, -7.0])
    loss, m = kto_loss(policy, reference, desirable, kl_policy_logps=kl_policy, kl_reference_logps=kl_reference,
                       beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    # r = 1, -1, 0.5; desirable rows: 1 - s(0.5 (1 - 0.4)), 1 - s(0.5 (0.5 - 0.4));
    # undesirable row: 2 (1 - s(0.5 (0.4 - (-1)))); mean over the 3 rows
    expected = ((1 - _sigmoid(0.3)) + 2 * (1 - _sigmoid(0.7)) + (1 - _sigmoid(0.05))) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    assert m["z0"].item() == pytest.approx(0.4, abs=1e-7)
    assert m["reward_desirable"].item() == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert m["reward_undesirable"].item() == pytest.approx(-1.0)
    assert m["margin"].item() == pytest.approx(1.75)
    assert m["accuracy_desirable"].item() == 1.0  # 1 > 0.4 and 0.5 > 0.4
    assert m["accuracy_undesirable"].item() == 1.0  # -1 < 0.4
    assert (m["n_desirable"].item(), m["n_undesirable"].item()) == (2, 1)


def test_z0_is_clamped_at_zero_and_carries_no_gradient():
    policy = torch.tensor([-3.0, -4.0], requires_grad=True)
    kl_policy = torch.tensor([-2.0, -2.0], requires_grad=True)
    loss, m = kto_loss(policy, torch.tensor([-3.0, -4.0]), torch.tensor([True, False]),
                       kl_policy_logps=kl_policy, kl_reference_logps=torch.tensor([-1.0, -1.0]), beta=1.0)
    assert m["z0"].item() == 0.0  # mean KL estimate -1 -> max(0, -1)
    # r = 0 on both rows: loss = (1 - s(0)) = 0.5 each; d/dr: desirable -s'(0)/2 = -1/8, undesirable +1/8
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert torch.allclose(policy.grad, torch.tensor([-0.125, 0.125]))
    assert kl_policy.grad is None


def test_metrics_without_a_label_are_nan_and_errors_are_clear():
    loss, m = kto_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -2.0]), torch.tensor([True, True]),
                       kl_policy_logps=torch.zeros(2), kl_reference_logps=torch.zeros(2))
    assert math.isnan(m["reward_undesirable"].item()) and math.isnan(m["accuracy_undesirable"].item())
    assert m["reward_desirable"].item() == 0.0
    with pytest.raises(ValueError, match="at least 2 trajectories in the global batch"):
        kto_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([True]),
                 kl_policy_logps=torch.zeros(1), kl_reference_logps=torch.zeros(1))
    with pytest.raises(ValueError, match=r"must be \[B\]"):
        kto_loss(torch.zeros(2, 3), torch.zeros(2), torch.tensor([True, False]),
                 kl_policy_logps=torch.zeros(2), kl_reference_logps=torch.zeros(2))
    with pytest.raises(ValueError, match=r"must both be \[G\]"):
        kto_loss(torch.zeros(2), torch.zeros(2), torch.tensor([True, False]),
                 kl_policy_logps=torch.zeros(2), kl_reference_logps=torch.zeros(3))


def test_weight_ratio_warns_outside_one_to_four_thirds():
    with pytest.warns(KTOWeightWarning, match="outside"):
        assert kto_weight_ratio(63, 37) == pytest.approx(63 / 37)  # EVA's 63 % desirable at lambda 1: 1.70
    with pytest.warns(KTOWeightWarning):
        assert kto_weight_ratio(10, 0) == math.inf
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # lambda_U = 63 * 1 / (37 * 1.2) = 1.419: ratio 1.2, inside
        assert kto_weight_ratio(63, 37, undesirable_weight=63 / (37 * 1.2)) == pytest.approx(1.2)


def test_sequence_logps_sums_the_trained_tokens():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    assert torch.equal(sequence_logps(logps, torch.tensor([[0, 1, 1], [1, 0, 0]])), torch.tensor([-5.0, -4.0]))


# ---- TRL ------------------------------------------------------------------------------------

class _FixedLogps:
    """A stand-in model for TRL's fused head: per-token log-probs a fixed function of the ids,
    0 where the label is -100 (what `fused_lm_head=True` returns)."""

    training = True

    def __call__(self, *, input_ids, labels, **_):
        logps = -(input_ids[:, 1:].float() / 7.0) - 0.01 * torch.arange(1, input_ids.shape[1]).float()
        logps = logps * (labels[:, 1:] != -100)
        return SimpleNamespace(log_probs=logps, entropy=torch.zeros_like(logps), mean_logits=torch.zeros_like(logps))


def _trl_kto(batch, *, beta, desirable_weight, undesirable_weight):
    from trl.trainer.kto_trainer import KTOTrainer

    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)
    trainer = SimpleNamespace(model=_FixedLogps(), accelerator=accelerator, aux_loss_enabled=False,
                              precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=beta,
                              desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                              _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    trainer._compute_kl_logps = lambda model, b: KTOTrainer._compute_kl_logps(trainer, model, b)
    loss = KTOTrainer._compute_loss(trainer, trainer.model, batch, return_outputs=False)
    return loss, trainer._metrics["train"]


@pytest.mark.parametrize("beta,weights", [(0.1, (1.0, 1.0)), (0.5, (1.0, 1.33)), (2.0, (0.8, 1.0))])
def test_equals_trl_kto_trainer_on_the_same_inputs(beta, weights):
    g = torch.Generator().manual_seed(0)
    b, length = 6, 12
    input_ids = torch.randint(1, 50, (b, length), generator=g)
    kl_ids = torch.randint(1, 50, (b, length), generator=g)
    prompt = torch.tensor([3, 5, 4, 6, 2, 5])  # completion starts here, row by row
    completion = (torch.arange(length)[None] >= prompt[:, None]).long()
    kl_completion = torch.roll(completion, 1, dims=0)
    labels = torch.tensor([True, False, True, True, False, True])
    # Policy sums are about -25 to -40 here: references around them give rewards of both signs and a
    # positive KL estimate (z0 > 0, so the clamp does not hide it).
    ref = torch.randn(b, generator=g) * 3 - 30
    ref_kl = torch.randn(b, generator=g) * 3 - 45
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "completion_mask": completion,
             "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(kl_ids), "KL_completion_mask": kl_completion,
             "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    trl_loss, trl_metrics = _trl_kto(batch, beta=beta, desirable_weight=weights[0], undesirable_weight=weights[1])

    # Ours, from per-token log-probs [B, T] and masks, with the same fixed model.
    model = _FixedLogps()
    token = model(input_ids=input_ids, labels=input_ids).log_probs
    kl_token = model(input_ids=kl_ids, labels=kl_ids).log_probs
    policy = sequence_logps(token, completion[:, 1:])
    kl_policy = sequence_logps(kl_token, kl_completion[:, 1:])
    loss, metrics = kto_loss(policy, ref, labels, kl_policy_logps=kl_policy, kl_reference_logps=ref_kl, beta=beta,
                             desirable_weight=weights[0], undesirable_weight=weights[1])
    assert abs(loss.item() - trl_loss.item()) < 1e-6
    assert abs(metrics["z0"].item() - trl_metrics["kl"][-1]) < 1e-6
    assert metrics["z0"].item() > 0  # the inputs exercise z0 (not clamped away)
    # TRL logs beta * r; ours logs r.
    assert abs(beta * metrics["reward_desirable"].item() - trl_metrics["rewards/chosen"][-1]) < 1e-5
    assert abs(beta * metrics["reward_undesirable"].item() - trl_metrics["rewards/rejected"][-1]) < 1e-5

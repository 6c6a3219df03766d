"""GRPO's loss normalisers under data parallelism: 2 gloo processes on two halves of a step give
the gradient 1 process gives on the whole step, for every aggregation (the ranks' gradients are
averaged, as DDP and FSDP2 average them)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from eva_train.objectives.losses import grpo_loss
from eva_train.rl.step import loss_normalizer

AGGREGATIONS = ("token-mean", "sequence-mean", "constant")
CONSTANT = 12.0


def step_rows():
    """4 episodes of different lengths whose log-probs depend on shared parameters theta [2]."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 5, 2, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    offsets = 0.1 * torch.randn(4, 5, generator=g)  # pi_old a little off: ratios around 1, some clipped
    advantages = torch.tensor([1.0, -0.5, 0.25, -1.0])
    return features, mask, offsets, advantages


def gradient(rows: slice, aggregation: str) -> torch.Tensor:
    """d loss / d theta on `rows` of the step, with the step's normaliser agreed across ranks."""
    features, mask, offsets, advantages = (x[rows] for x in step_rows())
    theta = torch.tensor([0.3, -0.2], requires_grad=True)
    logps = features @ theta - 2.0
    encoded = [SimpleNamespace(conversation=SimpleNamespace(trained=m)) for m in mask]
    normalizer = loss_normalizer(encoded, aggregation=aggregation, constant=CONSTANT)
    loss, _ = grpo_loss(logps, logps.detach() + offsets, advantages, mask, aggregation=aggregation,
                        normalizer=normalizer)
    loss.backward()
    return theta.grad


def _rank(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for aggregation in AGGREGATIONS:
            grad = gradient(slice(2 * rank, 2 * rank + 2), aggregation)
            dist.all_reduce(grad)  # data parallelism: the mean of the ranks' gradients
            results[(rank, aggregation)] = (grad / 2).tolist()
    finally:
        dist.destroy_process_group()


def test_two_ranks_on_two_halves_give_the_whole_steps_gradient(tmp_path):
    whole = {a: gradient(slice(0, 4), a) for a in AGGREGATIONS}
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
        results = dict(results)
    for aggregation in AGGREGATIONS:
        assert whole[aggregation].abs().sum() > 0
        for rank in range(2):
            assert results[(rank, aggregation)] == pytest.approx(whole[aggregation].tolist(), abs=1e-6), aggregation

"""Per-token log-probabilities of a batch under the policy, computed only where they are needed.

The output head of Qwen2.5-VL-7B maps each position to 152,064 logits; over a 16k-token
trajectory that is 2.4 G floats, most of them at image and tool-turn positions that carry no
loss. `policy_logprobs` asks the model for logits only at the positions that predict a trained
token (transformers' `logits_to_keep` with a boolean [B, T] mask, which slices the hidden
states before the head), then takes log-softmax in float32. Hugging Face's own causal-LM loss
and TRL's SFTTrainer compute logits at every position; this is most of the speed and memory
difference measured in `benchmarks/sft_throughput.py`.

The log-softmax is the rollout engine's own (`eva_core.backends.sampling.sampling_logprobs`:
temperature, suppressed ids), so GRPO scores a sampled token under the formula that recorded
its sampling log-probability.

The whole computation is one call of the model's forward, so FSDP2's root unit gathers the
output head as for any forward.

Holds `token_logprobs`, `predicting_positions` and `policy_logprobs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from eva_core.backends.sampling import sampling_logprobs
from torch import Tensor, nn

from eva_train.encoding.collate import Batch, append_row
from eva_train.encoding.masking import EncodedConversation


def token_logprobs(logits: Tensor, targets: Tensor, *, suppress: Sequence[int] = (),
                   temperature: float = 1.0) -> Tensor:
    """log p(target) under softmax(logits / temperature), in float32: the rollout engine's own
    `eva_core.backends.sampling.sampling_logprobs` (without a nucleus), so that training scores a
    sampled token with the formula that recorded its sampling log-probability.

        z = logits / temperature
        log p_i = z_{i, y_i} - log sum_{v not suppressed} exp(z_{i, v})

    Args:
        logits: [N, V] unnormalised scores.
        targets: [N] long token ids.
        suppress: ids a rollout engine never samples (`generation_config.suppress_tokens`):
            left out of the normalisation, so that the result is the log-probability of the
            distribution sampled from, which rollouts record.
        temperature: the sampling temperature the targets were drawn at (> 0): GRPO's ratio
            compares the tempered distribution the rollout engine sampled from, as TRL and verl do.

    Returns:
        [N] float32 log-probabilities.
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [N, V] and targets [N], got {tuple(logits.shape)}, {tuple(targets.shape)}")
    if temperature <= 0.0:
        raise ValueError(f"temperature must be > 0 for log-probabilities, got {temperature}")
    logp = sampling_logprobs(logits, temperature=temperature, suppress=suppress)
    return logp.gather(1, targets[:, None]).squeeze(1)


def predicting_positions(trained: Tensor) -> Tensor:
    """[B, T] bool: positions whose logits predict a trained token (trained shifted left by one)."""
    keep = torch.zeros_like(trained, dtype=torch.bool)
    keep[:, :-1] = trained[:, 1:]
    return keep


def policy_logprobs(model: nn.Module, batch: Batch, *, suppress: Sequence[int] = (),
                    temperature: float = 1.0, blank: EncodedConversation | None = None) -> Tensor:
    """Log-probability of every trained token of `batch` under `model`.

    Args:
        model: a Qwen2.5-VL-class model (transformers, or peft around one), possibly sharded.
        batch: a collated batch on the model's device.
        suppress, temperature: see `token_logprobs`.
        blank: a row with an image (`eva_train.encoding.episodes.blank_image_row`) that a batch
            without one runs beside (`append_row`), so the forward and backward run the vision
            tower; a sharded model passes it, since its vision blocks are FSDP2 units whose
            gathers every rank must make (`eva_train.encoding.microbatches`). It trains nothing and
            its row is dropped from the result. None, or a batch with an image: the batch alone.

    Returns:
        [B, T] float32 for the batch's own rows: log p(input_ids[b, t] | input_ids[b, :t], images)
        where batch.trained is True, 0 elsewhere. Differentiable.
    """
    rows, length = batch.trained.shape
    if blank is not None and batch.pixel_values is None:
        batch = append_row(batch, blank)
    keep = predicting_positions(batch.trained)
    out = model(**batch.model_inputs(), logits_to_keep=keep, use_cache=False)
    logits = out.logits  # [N, V], rows in (b, t) order of `keep`
    targets = batch.input_ids[batch.trained]  # same (b, t) order, one position later
    logps = token_logprobs(logits.reshape(-1, logits.shape[-1]), targets, suppress=suppress, temperature=temperature)
    full = torch.zeros(batch.trained.shape, dtype=torch.float32, device=logps.device)
    return full.masked_scatter(batch.trained, logps)[:rows, :length]

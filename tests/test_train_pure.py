"""eva-train's pure pieces: the SFT loss, the schedule, length grouping, rank slicing, specs."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from eva_train.data.conversations import window_seed
from eva_train.data.sources import ChatSample, ListSource, rank_slice
from eva_train.encoding.collate import append_row, collate, group_by_length, padding_fraction
from eva_train.encoding.masking import EncodedConversation
from eva_train.model.loading import (
    LoraSpec,
    ModelLoadError,
    ModelSpec,
    QuantizationUnavailableError,
    check_model_dir,
    quantization_config,
)
from eva_train.model.optim import OptimSpec, lr_factor
from eva_train.objectives.losses import sft_loss


def test_sft_loss_token_mean_by_hand():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    loss, metrics = sft_loss(logps, mask)
    # trained: -2, -3, -4 -> nll = (2 + 3 + 4) / 3 = 3
    assert loss.item() == pytest.approx(3.0)
    assert metrics["nll"].item() == pytest.approx(3.0)
    assert metrics["trained_tokens"].item() == 3


def test_sft_loss_sequence_mean_by_hand():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0], [-7.0, -8.0, -9.0]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 0]])
    loss, _ = sft_loss(logps, mask, normalization="sequences")
    # row 0: (2 + 3) / 2 = 2.5; row 1: 4; row 2 has no trained token and is skipped -> (2.5 + 4) / 2
    assert loss.item() == pytest.approx(3.25)


def test_sft_loss_gradient_only_on_trained_tokens():
    logps = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    loss, _ = sft_loss(logps, mask)
    loss.backward()
    # d loss / d logp = -m / sum(m) = -1/3 on the three trained tokens, 0 elsewhere
    assert torch.allclose(logps.grad, -mask.float() / 3)


def test_sft_loss_without_trained_tokens_is_zero_and_differentiable():
    logps = torch.randn(2, 3, requires_grad=True)
    loss, metrics = sft_loss(logps, torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0 and metrics["trained_tokens"].item() == 0
    assert torch.equal(logps.grad, torch.zeros(2, 3))


def test_sft_loss_rejects_bad_shapes_and_normalization():
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        sft_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="both be"):
        sft_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="normalization"):
        sft_loss(torch.zeros(2, 3), torch.ones(2, 3), normalization="batch")


def test_lr_factor_warmup_then_cosine_by_hand():
    kw = {"total_steps": 10, "warmup_steps": 2}
    assert lr_factor(0, **kw) == pytest.approx(0.5)  # (0 + 1) / 2
    assert lr_factor(1, **kw) == pytest.approx(1.0)
    assert lr_factor(2, **kw) == pytest.approx(1.0)  # p = 0 -> cos(0) = 1
    assert lr_factor(6, **kw) == pytest.approx(0.5)  # p = 4 / 8 -> (1 + cos(pi / 2)) / 2
    assert lr_factor(10, **kw) == pytest.approx(0.0)  # p = 1
    assert lr_factor(6, **kw, min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(6, **kw, schedule="linear") == pytest.approx(0.5)  # 1 - 4 / 8
    assert lr_factor(6, **kw, schedule="constant") == 1.0
    assert lr_factor(5, total_steps=10, warmup_steps=0) == pytest.approx((1 + math.cos(math.pi * 0.5)) / 2)


def test_optim_spec_checks():
    assert OptimSpec().lr == 2e-6  # the EVA paper's SFT learning rate
    with pytest.raises(ValueError, match="lr"):
        OptimSpec(lr=0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        OptimSpec(warmup_ratio=1.0)
    with pytest.raises(ValueError, match="schedule"):
        OptimSpec(schedule="step")


def test_group_by_length_sorts_within_batches_and_covers_every_index():
    lengths = [5, 100, 7, 98, 50, 52, 6, 99]
    batches = group_by_length(lengths, 2, seed=0, shuffle=False)
    # by length: 100 (1), 99 (7), 98 (3), 52 (5), 50 (4), 7 (2), 6 (6), 5 (0)
    assert batches == [[1, 7], [3, 5], [4, 2], [6, 0]]
    shuffled = group_by_length(lengths, 2, seed=3)
    assert sorted(map(sorted, shuffled)) == sorted(map(sorted, batches))
    assert shuffled == group_by_length(lengths, 2, seed=3)
    assert group_by_length(lengths, 3, seed=0, shuffle=False)[-1] == [6, 0]  # 8 = 3 + 3 + 2
    with pytest.raises(ValueError, match="batch_size"):
        group_by_length(lengths, 0, seed=0)


def test_length_grouping_pads_less_than_random_batches():
    rng = torch.Generator().manual_seed(0)
    lengths = (torch.randint(200, 4000, (256,), generator=rng)).tolist()
    grouped = [padding_fraction([lengths[i] for i in b]) for b in group_by_length(lengths, 8, seed=0)]
    random_batches = [padding_fraction(lengths[i:i + 8]) for i in range(0, 256, 8)]
    assert sum(grouped) / len(grouped) < 0.05 < 0.3 < sum(random_batches) / len(random_batches)


def test_padding_fraction_by_hand():
    assert padding_fraction([4, 2]) == pytest.approx(0.25)  # 1 - 6 / (2 * 4)
    assert padding_fraction([3, 3, 3]) == 0.0


def test_append_row_pads_to_the_longer_and_puts_its_image_last():
    def row(ids, *, image=False, sid=""):
        n = len(ids)
        types = torch.tensor([0, 1, 0] + [0] * (n - 3) if image else [0] * n, dtype=torch.int32)
        return EncodedConversation(torch.tensor(ids), torch.ones(n, dtype=torch.bool), types,
                                   torch.ones(4, 8) if image else None, torch.tensor([[1, 2, 2]]) if image else None,
                                   image_spans=[(0, 3)] if image else [], sample_id=sid)

    batch = collate([row([5, 6, 7, 8], sid="a"), row([5, 6], sid="b")], pad_id=9)
    blank = dataclasses.replace(row([1, 2, 3], image=True, sid="blank"), trained=torch.zeros(3, dtype=torch.bool))
    out = append_row(batch, blank)
    # the batch's rows unchanged; the row padded to 4 with id 0 under mask 0; its image is the batch's only one
    assert torch.equal(out.input_ids[:2], batch.input_ids) and out.input_ids[2].tolist() == [1, 2, 3, 0]
    assert out.attention_mask[2].tolist() == [1, 1, 1, 0] and not out.trained[2].any()
    assert out.mm_token_type_ids[2].tolist() == [0, 1, 0, 0] and out.mm_token_type_ids.dtype == torch.int32
    assert torch.equal(out.pixel_values, torch.ones(4, 8)) and out.image_grid_thw.tolist() == [[1, 2, 2]]
    # 4 + 2 + 3 = 9 real tokens of 3 x 4: padding 1 - 9/12
    assert out.num_tokens == 9 and out.padding_fraction == pytest.approx(0.25)
    assert out.sample_ids == ("a", "b", "blank")
    # a row longer than the batch pads the batch's rows too
    longer = append_row(collate([row([5, 6], sid="b")], pad_id=9), row([1, 2, 3], image=True))
    assert longer.input_ids.tolist() == [[5, 6, 0], [1, 2, 3]] and longer.attention_mask[0].tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="needs its pixel values"):
        append_row(batch, dataclasses.replace(blank, pixel_values=None, images=[torch.zeros(3, 28, 28)]))


def test_rank_slice_equal_counts_and_disjoint():
    order = list(range(11))
    parts = [rank_slice(order, rank=r, world_size=3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="outside"):
        rank_slice(order, rank=3, world_size=3)


def test_list_source_restarts_at_any_state():
    items = [ChatSample(messages=[{"role": "user", "content": str(i)}], sample_id=str(i)) for i in range(10)]
    source = ListSource(items, seed=1)
    full = list(source.examples(epoch=2, rank=1, world_size=2))
    ids = [s.sample_id for s, _ in full]
    assert len(ids) == source.num_examples(rank=1, world_size=2) == 5
    resumed = source.examples(epoch=2, rank=1, world_size=2, state=full[2][1])  # after the third sample
    assert [s.sample_id for s, _ in resumed] == ids[3:]
    assert ids != [s.sample_id for s, _ in source.examples(epoch=3, rank=1, world_size=2)]
    other_rank = {s.sample_id for s, _ in source.examples(epoch=2, rank=0, world_size=2)}
    assert not other_rank & set(ids)


def test_window_seeds_differ():
    seeds = {window_seed(s, e, w) for s in range(3) for e in range(3) for w in (0, 64, 128)}
    assert len(seeds) == 27


def test_lora_targets_only_the_language_model_by_default():
    regex = re.compile(LoraSpec().target_regex())
    assert regex.fullmatch("model.language_model.layers.3.self_attn.q_proj")
    assert regex.fullmatch("model.language_model.layers.0.mlp.down_proj")
    assert not regex.fullmatch("model.visual.blocks.0.mlp.down_proj")  # same name in the vision MLP
    assert not regex.fullmatch("model.visual.blocks.0.attn.qkv")
    assert not regex.fullmatch("lm_head")
    vision = re.compile(LoraSpec(vision=True).target_regex())
    assert vision.fullmatch("model.visual.blocks.0.attn.qkv")
    assert vision.fullmatch("model.visual.blocks.31.mlp.gate_proj")
    assert not vision.fullmatch("model.visual.patch_embed.proj")  # a Conv3d, not a block linear


def test_bad_specs_raise_typed_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="rank"):
        LoraSpec(r=0)
    with pytest.raises(ModelLoadError, match="dtype"):
        ModelSpec(path="x", dtype="int8")
    with pytest.raises(ModelLoadError, match="not a local folder"):
        check_model_dir(tmp_path / "Qwen/Qwen2.5-VL-7B-Instruct")
    with pytest.raises(ModelLoadError, match="config.json"):
        check_model_dir(tmp_path)


def test_4bit_needs_cuda_and_says_so():
    with pytest.raises(QuantizationUnavailableError, match="needs a CUDA GPU"):
        quantization_config(ModelSpec(path="x", quantization="4bit"), cuda_available=False)
    assert quantization_config(ModelSpec(path="x", quantization="8bit"), cuda_available=False).load_in_8bit
    assert quantization_config(ModelSpec(path="x")) is None

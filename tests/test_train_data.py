"""The SFT stream and its resumable loader on real protocol conversations."""

from __future__ import annotations

import math

import pytest
import torch
from eva_core.sample_video import write_sample_video
from eva_train.data.conversations import SFTStream
from eva_train.data.loaders import ResumableLoader, StreamPosition
from eva_train.data.sources import ListSource
from train_conversations import make_conversations

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def conversations(tmp_path_factory):
    video = write_sample_video(tmp_path_factory.mktemp("sft") / "v.mp4", duration=8.0, fps=10, width=336,
                               height=252, gop=10)
    return make_conversations(video, 14)


def _stream(conversations, tiny_model_dir, **kw):
    options = {"batch_size": 3, "max_length": 4096, "window_batches": 2, "seed": 0} | kw
    return SFTStream(ListSource(conversations, seed=5), str(tiny_model_dir), **options)


def _fingerprint(batch):
    return tuple(batch.input_ids.sum(1).tolist()), tuple(batch.attention_mask.sum(1).tolist())


def test_one_epoch_is_every_sample_once_in_ceil_n_over_b_batches(conversations, tiny_model_dir):
    stream = _stream(conversations, tiny_model_dir)
    batches = [b for b, _ in stream.batches(StreamPosition())]
    assert len(batches) == stream.num_batches() == math.ceil(14 / 3)
    assert [b.input_ids.shape[0] for b in batches].count(3) == 4  # 14 = 3 + 3 | 3 + 3 | 2 (windows of 6)
    lengths = sorted(int(n) for b in batches for n in b.attention_mask.sum(1))
    from eva_train.encoding.masking import encode_conversation

    processor = stream.processor
    assert lengths == sorted(len(encode_conversation(processor, c.messages)) for c in conversations)


def test_two_ranks_split_the_epoch(conversations, tiny_model_dir):
    seen = []
    for rank in range(2):
        stream = _stream(conversations, tiny_model_dir, rank=rank, world_size=2)
        batches = [b for b, _ in stream.batches(StreamPosition())]
        assert len(batches) == stream.num_batches() == math.ceil(7 / 3)
        seen += [int(n) for b in batches for n in b.input_ids.sum(1)]
    assert len(seen) == 14


def test_length_grouping_reports_padding(conversations, tiny_model_dir):
    grouped = [b.padding_fraction for b, _ in _stream(conversations, tiny_model_dir, window_batches=4)
               .batches(StreamPosition())]
    ungrouped = [b.padding_fraction for b, _ in _stream(conversations, tiny_model_dir, window_batches=1)
                 .batches(StreamPosition())]
    assert sum(grouped) < sum(ungrouped)


def test_positions_end_the_epoch_at_the_next_one(conversations, tiny_model_dir):
    positions = [p for _, p in _stream(conversations, tiny_model_dir).batches(StreamPosition(epoch=4))]
    assert positions[0] == StreamPosition(4, 0, None, 1)
    assert positions[1].window_start == 6 and positions[1].batches_done == 0
    assert positions[-1] == StreamPosition(epoch=5)


@pytest.mark.parametrize("stop_after", [1, 2, 4])
def test_resumed_loader_yields_the_remaining_batches(conversations, tiny_model_dir, stop_after):
    epoch = [0]
    full = ResumableLoader(_stream(conversations, tiny_model_dir), epoch_fn=lambda: epoch[0])
    expected = [_fingerprint(b) for b in full]
    first = ResumableLoader(_stream(conversations, tiny_model_dir), epoch_fn=lambda: epoch[0])
    it = iter(first)
    head = [_fingerprint(next(it)) for _ in range(stop_after)]
    resumed = ResumableLoader(_stream(conversations, tiny_model_dir), epoch_fn=lambda: epoch[0])
    resumed.position = first.position
    assert head + [_fingerprint(b) for b in resumed] == expected
    # The epoch ended: the stored position is the next epoch's start, whose order differs.
    assert resumed.position == StreamPosition(epoch=1)
    epoch[0] = 1
    assert [_fingerprint(b) for b in resumed] != expected


def test_a_position_of_another_epoch_is_dropped(conversations, tiny_model_dir):
    loader = ResumableLoader(_stream(conversations, tiny_model_dir), epoch_fn=lambda: 0)
    expected = [_fingerprint(b) for b in loader]
    stale = ResumableLoader(_stream(conversations, tiny_model_dir), epoch_fn=lambda: 0)
    stale.position = StreamPosition(3, 6, {"next": 6}, 1)
    assert [_fingerprint(b) for b in stale] == expected


def test_one_worker_gives_the_same_batches_and_leaves_the_global_rng_alone(conversations, tiny_model_dir):
    in_process = [_fingerprint(b) for b in ResumableLoader(_stream(conversations, tiny_model_dir))]
    torch.manual_seed(0)
    before = torch.get_rng_state()
    worker = ResumableLoader(_stream(conversations, tiny_model_dir), num_workers=1)
    assert [_fingerprint(b) for b in worker] == in_process
    assert torch.equal(torch.get_rng_state(), before)
    assert worker.position.epoch == 1
    with pytest.raises(ValueError, match="0 or 1"):
        ResumableLoader(_stream(conversations, tiny_model_dir), num_workers=2)


def test_every_validation_pass_serves_the_same_conversations(conversations, tiny_model_dir):
    """A validation curve compares one set of items: the second pass (and one cut short, as
    Lightning's sanity check cuts it) does not move the next pass on."""
    from eva_train.data.datamodules import SFTDataModule

    data = SFTDataModule(str(tiny_model_dir), ListSource(conversations, seed=0),
                         val=ListSource(conversations[:4], seed=0, shuffle=False), batch_size=2, window_batches=1)
    loader = data.val_dataloader()  # Lightning builds it once and iterates it at every validation
    next(iter(loader))  # the sanity check: one batch, then dropped
    passes = [[_fingerprint(b) for b in loader] for _ in range(2)]
    assert len(passes[0]) == 2 and passes[0] == passes[1]


def test_missing_data_is_built_once_per_job_not_once_per_node(conversations, tiny_model_dir):
    """Two nodes building one shared folder at once corrupt it (measured: a JSONDecodeError in
    eva-data's packing): only global rank 0 prepares, the other ranks wait."""
    from eva_train.data.datamodules import RlPromptDataModule, SFTDataModule

    assert SFTDataModule(str(tiny_model_dir), ListSource(conversations)).prepare_data_per_node is False
    assert RlPromptDataModule("unused", prompts_per_step=1).prepare_data_per_node is False

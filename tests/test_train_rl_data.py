"""RL prompts for GRPO: from eva-data shards with their video bytes and from a benchmark folder, the
same count on every rank, and a loader position that resumes with the next prompts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from eva_core.frame_select import frame_select
from eva_train.data.datamodules import RlPromptDataModule
from eva_train.data.loaders import ResumableLoader, StreamPosition
from eva_train.data.prompts import PromptStream, RlFolderSource
from eva_train.data.shards import RlShardSource, ShardSourceError
from rl_shards import rl_prompt, write_rl_shards

IDS = sorted(f"rl-v{v}-{k}" for v in range(4) for k in range(2))


@pytest.fixture(scope="module")
def rl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-shards")
    write_rl_shards(root)
    return root


@pytest.fixture(scope="module")
def rl_folder(tmp_path_factory):
    """A benchmark folder as `RlFolderSource` reads it: rl_prompts.jsonl and videos/{key}.mp4."""
    from eva_core.sample_video import write_sample_video

    root = tmp_path_factory.mktemp("rl-folder")
    (root / "videos").mkdir()
    lines = []
    for v in range(5):
        write_sample_video(root / "videos" / f"v{v}.mp4", duration=2.0, fps=5, width=56, height=56, gop=5)
        lines.append(json.dumps(rl_prompt(f"v{v}", 0).to_dict()) + "\n")
    (root / "rl_prompts.jsonl").write_text("".join(lines))
    return root


def test_shard_source_serves_every_prompt_once_with_its_video_bytes(rl_root):
    source = RlShardSource(str(rl_root / "rl"))
    assert len(source.urls) == 4  # the byte cap gave each video a shard of its own
    assert source.num_examples(rank=0, world_size=1) == 8
    served = list(source.examples(epoch=0, rank=0, world_size=1))
    assert sorted(item.prompt.id for item, _ in served) == IDS
    for item, _ in served:
        assert item.video == (rl_root / f"{item.prompt.video_key}.mp4").read_bytes()
        assert item.prompt.ground_truth == "A" and item.prompt.options == {"A": "red", "B": "green"}
    # the frame tool opens the bytes: no temporary file
    selection = frame_select(served[0][0].video, start_time=0.0, end_time=4.0, nframes=2, resize=0.25)
    assert selection.frames.shape[0] == 2
    # from the state after any prompt, the rest of the epoch follows; another epoch, another shard order
    order = [item.prompt.id for item, _ in served]
    for k, (_, state) in enumerate(served):
        assert [i.prompt.id for i, _ in source.examples(epoch=0, rank=0, world_size=1, state=state)] == order[k + 1:]
    assert [i.prompt.id for i, _ in source.examples(epoch=1, rank=0, world_size=1)] != order
    with pytest.raises(ShardSourceError, match="resample: true"):
        source.num_examples(rank=0, world_size=2)


def test_loader_steps_resume_with_the_next_prompts_and_cross_epochs(rl_root):
    source = RlShardSource(str(rl_root / "rl"))
    loader = ResumableLoader(PromptStream(source, prompts_per_step=3))
    assert len(loader) == 2  # 8 prompts // 3: the last 2 of each epoch are left out
    epoch0, positions = [], []
    for batch in loader:
        epoch0.append([i.prompt.id for i in batch])
        positions.append(loader.position)
    assert [len(b) for b in epoch0] == [3, 3] and len({p for b in epoch0 for p in b}) == 6
    assert positions[0].epoch == 0 and positions[0].window_start == 3 and positions[1] == StreamPosition(epoch=1)
    resumed = ResumableLoader(PromptStream(source, prompts_per_step=3))
    resumed.position = positions[0]
    assert [[i.prompt.id for i in b] for b in resumed] == epoch0[1:]
    epoch1 = [[i.prompt.id for i in b] for b in resumed]  # the loader moved on to epoch 1 by itself
    assert resumed.position == StreamPosition(epoch=2) and epoch1 != epoch0
    # a trainer in another epoch than the stored position starts that epoch afresh
    stale = ResumableLoader(PromptStream(source, prompts_per_step=3), epoch_fn=lambda: 1)
    stale.position = positions[0]
    assert [[i.prompt.id for i in b] for b in stale] == epoch1
    with pytest.raises(ValueError, match="make no step of 9"):
        len(ResumableLoader(PromptStream(source, prompts_per_step=9)))


def test_resampled_ranks_take_the_same_number_of_steps(rl_root):
    source = RlShardSource(str(rl_root / "rl"), resample=True, seed=3)
    runs = {}
    for rank in (0, 1):
        loader = ResumableLoader(PromptStream(source, prompts_per_step=2, rank=rank, world_size=2))
        runs[rank] = [[i.prompt.id for i in b] for b in loader]
        again = [[i.prompt.id for i in b]
                 for b in ResumableLoader(PromptStream(source, prompts_per_step=2, rank=rank, world_size=2))]
        assert again == runs[rank]  # deterministic per (seed, epoch, rank)
    assert len(runs[0]) == len(runs[1]) == 2  # ceil(8 / 2) = 4 prompts a rank, 2 a step
    assert runs[0] != runs[1]


def test_folder_source_splits_ranks_evenly_and_disjointly(rl_folder):
    source = RlFolderSource(str(rl_folder), shuffle_seed=4)
    ranks = [[i.prompt.id for i, _ in source.examples(epoch=0, rank=r, world_size=2)] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == source.num_examples(rank=0, world_size=2) == 2  # 5 // 2
    assert not set(ranks[0]) & set(ranks[1])
    items = list(source.examples(epoch=0, rank=0, world_size=1))
    assert items[0][0].video == rl_folder / "videos" / f"{items[0][0].prompt.video_key}.mp4"
    with pytest.raises(ValueError, match="cannot feed 8 ranks"):
        source.num_examples(rank=0, world_size=8)


def _trainer(rank: int, world: int, epoch: int = 0):
    """What the data module reads of a trainer: its epoch and the data-parallel rank."""
    strategy = SimpleNamespace(distributed_sampler_kwargs={"rank": rank, "num_replicas": world})
    return SimpleNamespace(current_epoch=epoch, strategy=strategy, global_rank=rank, world_size=world)


def test_data_module_splits_by_the_trainers_rank_and_stores_its_position(rl_root, rl_folder):
    def module():
        return RlPromptDataModule(source=RlShardSource(str(rl_root / "rl"), resample=True), prompts_per_step=2)

    data = module()
    data.trainer = _trainer(1, 2)
    loader = data.train_dataloader()
    assert (loader.stream.rank, loader.stream.world_size) == (1, 2)
    it = iter(loader)
    first = [i.prompt.id for i in next(it)]
    state = data.state_dict()
    rest = [[i.prompt.id for i in b] for b in it]
    assert state["train_position"]["window_start"] == 2 and len(rest) == 1
    # a resumed run: the state arrives before or after the loader is built, both continue
    for before in (True, False):
        resumed = module()
        resumed.trainer = _trainer(1, 2)
        if before:
            resumed.load_state_dict(json.loads(json.dumps(state)))  # a checkpoint holds plain data
        loader = resumed.train_dataloader()
        if not before:
            resumed.load_state_dict(state)
        assert [[i.prompt.id for i in b] for b in loader] == rest
    fresh = module()
    fresh.trainer = _trainer(1, 2)
    assert [i.prompt.id for i in next(iter(fresh.train_dataloader()))] == first
    # held-out prompts: every validation pass serves the same ones, even after a partial pass
    held_out = RlPromptDataModule(source=RlShardSource(str(rl_root / "rl")), val=RlFolderSource(str(rl_folder)),
                                  prompts_per_step=2)
    held_out.trainer = _trainer(0, 1)
    val = held_out.val_dataloader()
    full_pass = [[i.prompt.id for i in b] for b in val]
    assert len(full_pass) == 2 and next(iter(val)) and [[i.prompt.id for i in b] for b in val] == full_pass
    with pytest.raises(ValueError, match="exactly one"):
        RlPromptDataModule(str(rl_folder), source=RlFolderSource(str(rl_folder)))
    assert isinstance(RlPromptDataModule(str(rl_folder), prompts_per_step=2).train_source, RlFolderSource)


def test_synth_records_shards_stream_as_rl_prompts(tmp_path):
    """`eva-data synth --records --shards` packs each video's RL prompts beside its trajectories:
    the GRPO stream serves exactly the folder's rl_prompts.jsonl, each with its own video."""
    from eva_data.cli import main as eva_data_main

    code = eva_data_main(["synth", "--out", str(tmp_path / "bench"), "--n", "3", "--seed", "5", "--difficulty", "tiny",
                          "--records", "--shards", str(tmp_path / "shards")])
    assert code == 0
    written = [json.loads(line) for line in (tmp_path / "bench" / "rl_prompts.jsonl").read_text().splitlines()]
    served = list(RlShardSource(str(tmp_path / "shards")).examples(epoch=0, rank=0, world_size=1))
    assert sorted(item.prompt.id for item, _ in served) == sorted(r["id"] for r in written) and len(written) == 3
    for item, _ in served:
        assert item.video == (tmp_path / "bench" / "videos" / f"{item.prompt.video_key}.mp4").read_bytes()

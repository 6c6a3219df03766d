"""RL prompt shards for the eva-train tests, built the way the data pipeline builds them.

Short generated videos are packed into input shards (`eva_data.shards.writer.pack`), then
`eva_data.construct.build.build_rl_set` (what `eva-data build rl` runs) writes the RL shards from
a failure file of RL prompt records: a choice question with two options per prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from eva_core.sample_video import write_sample_video
from eva_data.construct.build import BuildConfig, build_rl_set
from eva_data.records.records import RlPrompt, Source
from eva_data.shards.sample import ShardSample
from eva_data.shards.writer import pack

QUESTION = "What colour is the shape?\nA. red\nB. green"


def rl_prompt(video_key: str, k: int) -> RlPrompt:
    return RlPrompt(id=f"rl-{video_key}-{k}", source=Source.ORACLE, video_key=video_key, item_index=k,
                    prompt=[{"role": "user", "content": QUESTION}], answer_type="choice", ground_truth="A",
                    options={"A": "red", "B": "green"}, meta={"question_type": "colour"})


def write_rl_shards(root: Path, *, videos: int = 4, per_video: int = 2, max_bytes: int = 40_960) -> Path:
    """`root/rl`: RL shards with `per_video` prompts on each of `videos` 4 s videos (about 42 kB
    each, so the smallest cap eva-data allows, 40960 bytes, gives each video a shard of its own).
    Returns the RL shard folder."""
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for v in range(videos):
        path = write_sample_video(root / f"v{v}.mp4", duration=4.0, fps=10, width=224, height=224, gop=5)
        samples.append(ShardSample(key=f"v{v}", video=path.read_bytes()))
    pack(samples, root / "input", max_bytes=max_bytes)
    failures = root / "prompts.jsonl"
    failures.write_text("".join(json.dumps(rl_prompt(f"v{v}", k).to_dict()) + "\n"
                                for v in range(videos) for k in range(per_video)))
    build_rl_set(root / "input", root / "rl", failures=failures, config=BuildConfig(kind="rl", max_bytes=max_bytes))
    return root / "rl"

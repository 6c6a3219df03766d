"""The first video of an evaluation run does not pay the decoder's import inside an item.

torchcodec's import (its FFmpeg ops pull in `torch._dynamo`) took 7-10 s and landed in the first
batch's tool time (issue 17). `run_items` imports it before the first item: a fresh process
checks that the decoder is loaded when the first batch starts (it opens its videos first).
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from pathlib import Path
from eva_core.policy import Generation
from eva_core.sample_video import write_sample_video
from eva_eval.items import AnswerKind, BenchmarkItem
from eva_eval.results import ResultStore
from eva_eval import runner
from eva_eval.runner import RunSettings, run_items

video = Path(sys.argv[1]) / "v.mp4"
write_sample_video(video, duration=2.0, fps=4, width=64, height=48)
loaded_at_first_batch = []
run_batch = runner.run_batch

def probed_run_batch(policy, batch, settings):  # the items' timing starts in here
    loaded_at_first_batch.append("torchcodec.decoders" in sys.modules)
    return run_batch(policy, batch, settings)

runner.run_batch = probed_run_batch

class Answer:
    def generate(self, requests, config):
        return [Generation(text="<answer>A</answer>") for _ in requests]

    def release(self, episode_id):
        pass

before = "torchcodec.decoders" in sys.modules
item = BenchmarkItem(id="0", benchmark="t", question="Which? (A) x (B) y", ground_truth="A", answer_kind=AnswerKind.CHOICE,
                     video_ref="v.mp4", video=video)
with ResultStore(Path(sys.argv[1]) / "run") as store:
    stats = run_items(Answer(), [item], store, RunSettings(progress=False))
print(before, loaded_at_first_batch[0], stats.ran, stats.errors)
"""


def test_the_decoder_is_imported_before_the_first_item(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True,
                            timeout=300, check=True)
    assert result.stdout.split() == ["False", "True", "1", "0"]

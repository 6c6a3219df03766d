"""GRPO test helpers: the module's engine with a frame_select call appended to every reply (a random
tiny model rarely writes one, and a step must see the tool's frames), and an RL prompt folder."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.sample_video import write_sample_video
from eva_data.records.records import RlPrompt, Source

QUESTION = "What colour is the shape?\nA. red\nB. green"


class ForcedEngine(AppendToolCall):
    def __init__(self, engine, duration: float = 4.0):
        super().__init__(engine, "\n" + frame_select_call(0.0, duration, 2, 0.25))
        self.suppress = engine.suppress

    def sync_weights(self, named_parameters=None):
        self.policy.sync_weights(named_parameters)


class ForceToolCalls(L.Callback):
    def on_fit_start(self, trainer, module):
        module.engine = ForcedEngine(module.engine)


def write_rl_folder(root: Path, questions: list[str], *, duration: float = 4.0) -> Path:
    """An RL prompt folder (`rl_prompts.jsonl`, `videos/`): one sample video per question, answer A."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    with open(root / "rl_prompts.jsonl", "w") as out:
        for i, question in enumerate(questions):
            write_sample_video(root / "videos" / f"v{i}.mp4", duration=duration, fps=5, width=112, height=112, gop=5)
            out.write(json.dumps(RlPrompt(id=f"rl-{i}", source=Source.ORACLE, video_key=f"v{i}", item_index=i,
                                          prompt=[{"role": "user", "content": question}], answer_type="choice",
                                          ground_truth="A").to_dict()) + "\n")
    return root

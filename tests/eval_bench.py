"""A small benchmark of generated videos for the eva-eval tests (imported by test_eval_*.py).

Items are in the unified format (VideoMME style: four options, letter answers), with absolute
paths from "another machine" so the tail resolution is exercised, plus one item whose video is
missing and one whose video is corrupt. `oracle_script` writes a ScriptedPolicy script that
makes one tool call and answers each item as told.
"""

from __future__ import annotations

import json
from pathlib import Path

from eva_core.sample_video import write_sample_video

LETTERS = "ABCD"


def make_bench(root: Path, *, videos: int = 3, per_video: int = 4, duration: float = 3.0) -> Path:
    """Write videos and `ann.jsonl` under `root`; returns the annotation file.

    Item i asks about video i // per_video; its ground truth is LETTERS[i % 4]. Two more items
    follow: one whose video does not exist, one whose video is corrupt (an MP4 header and noise).
    """
    root.mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        write_sample_video(root / f"vid{v}.mp4", duration=duration, fps=10, width=112, height=84, gop=10)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    records = []
    for i in range(videos * per_video):
        records.append(_record(i, f"/data/elsewhere/videos/vid{i // per_video}.mp4", LETTERS[i % 4]))
    n = videos * per_video
    records.append(_record(n, "/data/elsewhere/videos/gone.mp4", "A"))
    records.append(_record(n + 1, "broken.mp4", "B"))
    path = root / "ann.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _record(index: int, video: str, gt: str) -> dict:
    question = f"What is shown in clip {index}?\nA. red\nB. green\nC. blue\nD. grey"
    return {"videos": [video], "prompt": [{"role": "user", "content": question}],
            "reward_model": {"style": "rule", "ground_truth": gt}, "index": index}


def tool_call(start: float, end: float, nframes: int, resize: float = 1.0) -> str:
    args = {"start_time": start, "end_time": end, "nframes": nframes, "resize": resize}
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


def oracle_script(annotations: Path, out: Path, *, benchmark: str = "videomme", wrong: set[str] = frozenset(),
                  nframes: int = 4) -> Path:
    """A `scripted:` file: per episode, one frame_select call, then the right answer, or a wrong
    one for the ids in `wrong`."""
    script = {}
    for line in annotations.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        gt = record["reward_model"]["ground_truth"]
        answer = LETTERS[(LETTERS.index(gt) + 1) % 4] if str(record["index"]) in wrong else gt
        script[f"{benchmark}/{record['index']}"] = [
            f"Let me look.\n{tool_call(0, 3, nframes)}", f"The clip shows it. <answer>{answer}</answer>"]
    out.write_text(json.dumps(script), encoding="utf-8")
    return out

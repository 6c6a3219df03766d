"""The uniform view: N frames sampled evenly over the whole video, shown up front with the question.

This is the passive baseline EVA is compared with (eva-eval's `--mode uniform`), and the
conversation a uniform baseline is trained on (eva-data's uniform counterparts of the oracle
trajectories). Both build it here, so training and evaluation show the model the same turn.

Frames come from `eva_core.frame_select` over [0, duration] (so the same sample times, resize
rule and decoders as the agent's tool), without the per-call budget: the baseline's frame count
and resolution are what is being compared. The resolution is a resize factor, or a target short
side in pixels (resize = short_side / min(h, w)), rounded to multiples of 28 by the tool.

The conversation is ours (the EVA paper's uniform baselines come from other harnesses): the
item's own system turn if it has one, and one user turn holding the frames, labelled like the
agent's tool turn (`Frame {i} at [mm:ss]: ` + image, a newline before each but the first),
then a newline and the protocol's first user text (`Video Length: ... {question}`). The only
difference from the agent's opening is that the frames are given up front and no tool is
offered. An episode of this view records `config["mode"] == "uniform"` with its frame count
and effective resize, from which `eva_core.agent.replay_messages` rebuilds the turn.
"""

from __future__ import annotations

from eva_core.decoders import Backend
from eva_core.frame_select import FrameSelection, frame_select
from eva_core.policy import Message
from eva_core.protocol import first_user_text, frame_label_text, image_part, text_part
from eva_core.reader import VideoReader

MODE = "uniform"
"""`Episode.config["mode"]` of an episode that saw the uniform view."""


def uniform_resize(reader: VideoReader, *, resize: float = 1.0, short_side: int | None = None) -> float:
    """The resize factor: `resize`, or the one that brings the short side to `short_side` pixels."""
    info = reader.info
    return short_side / min(info.width, info.height) if short_side else resize


def uniform_selection(reader: VideoReader, *, nframes: int, resize: float, backend: Backend = "auto",
                      span: tuple[float, float] | None = None) -> FrameSelection:
    """`nframes` frames over the whole video (or over `span`, (start, end) seconds) at `resize`,
    no visual-token budget."""
    start, end = (0.0, reader.info.duration) if span is None else span
    return frame_select(reader, start_time=start, end_time=end, nframes=nframes, resize=resize,
                        budget=None, max_nframes=nframes, backend=backend)


def uniform_messages(question: str, selection: FrameSelection, system: str | None = None) -> list[Message]:
    """The baseline's conversation for one question (see the module docstring)."""
    content: list[dict] = []
    for i, (frame, label) in enumerate(zip(selection.frames.unbind(0), selection.labels, strict=True)):
        content.append(text_part(frame_label_text(i, label)))
        content.append(image_part(frame))
    content.append(text_part("\n" + first_user_text(question.strip(), selection.info)))
    messages: list[Message] = []
    if system is not None:
        messages.append({"role": "system", "content": [text_part(system)]})
    messages.append({"role": "user", "content": content})
    return messages

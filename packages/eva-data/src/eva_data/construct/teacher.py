"""Teacher runs: any eva-core policy plays episodes under the EVA protocol, with teacher-only
additions to its system turn, and the saved episode is what the student will see.

The additions (paper, Section 3.1): the k experiences most relevant to the question from the
experience bank, a workflow hint drawn from a configurable set (seeded per episode), and a
reflective-thinking prompt. `TeacherPolicy` wraps the teacher's policy and appends them to the
system turn of every request it forwards, so the agent loop itself (`eva_core.agent.run_episodes`)
builds and records the protocol's conversation untouched: the saved `Episode` holds the
protocol's prompt, the teacher's replies, and each tool call's exact decode parameters
(effective window, frames, resize, sample times, decoded presentation times, frame size), from
which training decodes the same pixels again. A teacher that quotes its hint in a reply has
that line removed from the saved reply (`student_reply`).

The replies are checked for the four-part form (`FOUR_PARTS`); `TeacherRun.four_part` says
whether every reply has it, and builders keep only trajectories that do.

`TeacherConfig.as_is` runs a policy with no additions at all: the protocol's prompt untouched,
so the episodes are the policy's own (an agent's failures for KTO, sampled as it would act).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eva_core.agent import AgentConfig, Task, run_episodes
from eva_core.episode import Episode
from eva_core.policy import Generation, GenerationConfig, GenerationRequest, Message, Policy
from eva_core.protocol import SYSTEM_PROMPT, text_part
from eva_core.reader import VideoReader
from eva_core.video import VideoSource

from eva_data.construct.bank import Experience, ExperienceBank
from eva_data.construct.scripted_teacher import FOUR_PARTS
from eva_data.synth.events import derive_seed

DEFAULT_HINTS = (
    "Survey the whole video at low resolution first, then zoom in on the candidate moments at full resolution.",
    "Start with a sparse survey; if nothing relevant shows, survey again more densely before zooming in.",
    "Find the moment the question names, confirm it at full resolution, and reply only from what you read there.",
    "Cut the video into parts, survey each, and zoom in on every part that shows something relevant.",
)
"""Workflow hints, one drawn per episode (the paper's "diverse workflow hints")."""

REFLECTIVE_PROMPT = (
    "Think reflectively. Before each action ask: what have the frames shown so far, is it enough to reply "
    "from visual evidence, and if not, which frames at what resolution would settle it? Write every turn as "
    "Summary:, Reflection:, Plan:, Action:, with the tool call or the final reply after Action:.")


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher runs.

    Attributes:
        hints: workflow hints to draw from (one per episode); empty: no hint.
        reflective_prompt: appended to every teacher episode's system turn ("": none).
        experiences: how many bank entries to retrieve per question (0: none).
        seed: seeds the hint draws.
        agent: the agent loop's settings (protocol defaults).
    """

    hints: tuple[str, ...] = DEFAULT_HINTS
    reflective_prompt: str = REFLECTIVE_PROMPT
    experiences: int = 3
    seed: int = 0
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self):
        if self.experiences < 0:
            raise ValueError(f"TeacherConfig.experiences must be >= 0, got {self.experiences}")

    @classmethod
    def as_is(cls, *, seed: int = 0, agent: AgentConfig | None = None) -> TeacherConfig:
        """No hint, no reflective prompt, no experiences: the policy sees the protocol's prompt only."""
        return cls(hints=(), reflective_prompt="", experiences=0, seed=seed, agent=agent or AgentConfig())


def teacher_additions(hint: str, experiences: Sequence[Experience], reflective_prompt: str) -> str:
    """The text appended to the teacher's system turn ("" when there is nothing to add)."""
    parts = []
    if experiences:
        parts.append("Experience from similar questions:\n" + "\n".join(e.prompt_line() for e in experiences))
    if hint:
        parts.append(f"Workflow hint: {hint}")
    if reflective_prompt:
        parts.append(reflective_prompt)
    return "\n\n".join(parts)


class TeacherPolicy:
    """A policy that forwards requests to `inner` with per-episode text appended to the system turn.

    Args:
        inner: the teacher model.
        additions: episode id -> text; episodes not listed are forwarded unchanged.
    """

    def __init__(self, inner: Policy, additions: dict[str, str]):
        self.inner, self.additions = inner, additions

    def _with_additions(self, request: GenerationRequest) -> GenerationRequest:
        extra = self.additions.get(request.episode_id)
        if not extra:
            return request
        messages: list[Message] = list(request.messages)
        first = messages[0]
        if first["role"] == "system":
            text = "".join(p["text"] for p in first["content"] if p["type"] == "text")
            messages[0] = {"role": "system", "content": [text_part(f"{text}\n\n{extra}")]}
        else:
            messages.insert(0, {"role": "system", "content": [text_part(f"{SYSTEM_PROMPT}\n\n{extra}")]})
        return replace(request, messages=messages)

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        return self.inner.generate([self._with_additions(r) for r in requests], config)

    def release(self, episode_id: str) -> None:
        self.inner.release(episode_id)


def has_four_parts(reply: str) -> bool:
    """Every part of `FOUR_PARTS` present, in order."""
    positions = [reply.find(part) for part in FOUR_PARTS]
    return min(positions) >= 0 and positions == sorted(positions)


def student_reply(reply: str, additions: str) -> str:
    """The reply without lines that quote a teacher-only addition (a hint, an experience line);
    lines holding a tag (`<tool_call>`, `<answer>`) stay, since the episode was parsed from them."""
    quoted = [line.strip() for line in additions.splitlines() if len(line.strip()) > 20]
    kept = [line for line in reply.splitlines() if "<" in line or not any(q in line for q in quoted)]
    return "\n".join(kept)


@dataclass
class TeacherTask:
    """One teacher episode: a unified-format item and its video.

    Attributes:
        item: the item (`prompt`, `index`, and for retrieval `question_type`, `duration`).
        video: its video (path, bytes or an open reader).
        episode_id: stable id (seeds the hint draw; the scripted teacher's strategy too).
    """

    item: dict[str, Any]
    video: VideoSource | VideoReader
    episode_id: str


@dataclass
class TeacherRun:
    """A teacher episode as saved, and what only the teacher saw.

    Attributes:
        episode: the episode as the student will see it (protocol prompt, replies, tool calls).
        additions: the teacher-only text appended to its system turn.
        hint: the workflow hint drawn.
        experience_ids: the bank entries retrieved.
        four_part: every reply has the four parts.
    """

    episode: Episode
    additions: str
    hint: str
    experience_ids: list[str]
    four_part: bool


def _question(item: dict[str, Any]) -> str:
    turns = item["prompt"]
    if isinstance(turns, str):
        return turns
    user = next((t for t in turns if t.get("role") == "user"), {"content": ""})
    content = user["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def run_teacher(policy: Policy, tasks: Sequence[TeacherTask], config: TeacherConfig = TeacherConfig(),
                bank: ExperienceBank | None = None) -> list[TeacherRun]:
    """Run teacher episodes in one batch; returns them in task order, saved as the student sees them."""
    additions, hints, used = {}, {}, {}
    for task in tasks:
        rng = random.Random(derive_seed(config.seed, "hint", task.episode_id))
        hint = rng.choice(config.hints) if config.hints else ""
        found = []
        if bank is not None and config.experiences:
            found = bank.relevant(task.item.get("question_type", "unknown"), _question(task.item),
                                  float(task.item.get("duration", 0.0)), k=config.experiences)
        additions[task.episode_id] = teacher_additions(hint, found, config.reflective_prompt)
        hints[task.episode_id], used[task.episode_id] = hint, [e.id for e in found]
    episodes = run_episodes(TeacherPolicy(policy, additions),
                            [Task(video=t.video, prompt=t.item["prompt"], video_id=t.item["videos"][0]
                                  if "videos" in t.item else None, episode_id=t.episode_id) for t in tasks],
                            config.agent)
    runs = []
    for episode in episodes:
        extra = additions[episode.episode_id]
        if extra:
            for step in episode.steps:
                step.reply = student_reply(step.reply, extra)
        runs.append(TeacherRun(episode=episode, additions=extra, hint=hints[episode.episode_id],
                               experience_ids=used[episode.episode_id],
                               four_part=bool(episode.steps) and all(has_four_parts(s.reply) for s in episode.steps)))
    return runs

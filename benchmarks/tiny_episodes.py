"""What `agent_turns.py` and `rollouts.py` share: their episode options, the tiny Qwen2.5-VL (or a
larger random model of its architecture) loaded as a `TransformersPolicy`, the sample video, and
the forced frame_select call appended to every reply.

The scripts import this as a sibling module: `uv run python benchmarks/<script>.py` puts
`benchmarks/` first on `sys.path`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from eva_core.backends import TransformersPolicy
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.policy import Policy
from eva_core.sample_video import write_sample_video
from eva_core.tiny_model import TinyModelSpec, build_tiny_model, tiny_model_dir


def add_episode_options(parser: argparse.ArgumentParser, *, turns: int, max_new_tokens: int, nframes: int,
                        resize: float) -> None:
    """The options both scripts take; the defaults that differ between them are arguments."""
    parser.add_argument("--turns", type=int, default=turns)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--nframes", type=int, default=nframes)
    parser.add_argument("--resize", type=float, default=resize)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--hidden-size", type=int, default=None, help="a larger random model (multiple of 64)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def parse_episode_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv` and apply `--threads`."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


@dataclass(frozen=True)
class TinySetup:
    """The policy and video a benchmark runs on.

    Attributes:
        policy: the model on CPU in float32.
        video: the sample video, `--duration` seconds at 336x252, 10 fps, a keyframe a second.
        model_name: the tiny model's folder name, or "random" for a `--hidden-size` model.
        n_params: parameters of the model.
    """

    policy: TransformersPolicy
    video: Path
    model_name: str
    n_params: int

    def same_weights(self, **options) -> TransformersPolicy:
        """Another policy on the same model and processor, with other `TransformersPolicy` options."""
        return TransformersPolicy(self.policy.model, self.policy.processor, **options)


def tiny_setup(args: argparse.Namespace, tmp: Path) -> TinySetup:
    """Load the tiny model (or build the `--hidden-size`/`--layers` one in `tmp`) and write the video into `tmp`."""
    if args.hidden_size:
        spec = TinyModelSpec.scaled(args.hidden_size, args.layers)
        model_dir = build_tiny_model(tmp / "model", spec=spec)
    else:
        model_dir = tiny_model_dir()
    video = write_sample_video(tmp / "video.mp4", duration=args.duration, fps=10, width=336, height=252, gop=10)
    policy = TransformersPolicy.from_pretrained(str(model_dir), device="cpu", dtype="float32")
    return TinySetup(policy=policy, video=video, model_name="random" if args.hidden_size else model_dir.name,
                     n_params=sum(p.numel() for p in policy.model.parameters()))


def forced(policy: Policy, args: argparse.Namespace) -> AppendToolCall:
    """`policy` with a frame_select call over the whole video appended to every reply: a random
    model never writes a valid one, and with it every episode runs all its turns."""
    return AppendToolCall(policy, "\n" + frame_select_call(0.0, args.duration, args.nframes, args.resize))

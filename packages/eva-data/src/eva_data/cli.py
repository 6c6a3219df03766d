"""`eva-data`: generate the synthetic benchmark, pack benchmarks into shards, inspect shards.

    eva-data synth --out DIR --n N --seed S [--difficulty easy|default|hard] [knobs] [--records [sft|kto]] [--shards DIR]
    eva-data pack SOURCE --out DIR [--video-root DIR] [--max-bytes B] [--max-count N]
    eva-data inspect SHARDS... [--examples K]
    eva-data build sft|kto|rl --input SHARDS --out DIR [--teacher scripted|PATH|URL] [--judge rule|PATH|URL] [...]

`synth` writes a benchmark folder in the unified annotation format (see
`eva_data.synth.benchmark`); `--records` adds oracle SFT trajectories (`trajectories.jsonl`,
labelled source "oracle") and RL prompts (`rl_prompts.jsonl`); `--records kto` also adds
rule-labelled KTO trajectories (`eva_data.records.shortcut`); `--shards` also packs it, each
video with its questions, trajectories and RL prompts (what `eva_train.data.shards.RlShardSource` streams). `pack` takes such a folder or any
unified-format jsonl (videos relative to `--video-root`, default the jsonl's folder) and writes
one sample per video into size-capped shards. `inspect` reads shards as training would.
`build` runs the data-construction pipeline (`eva_data.construct`): teacher episodes judged into
EVA-SFT or EVA-KTO shards, or EVA-RL prompts from a failure file and new questions; resumable.
With `--as-is` the teacher is the policy being trained, run on the protocol's prompt alone: KTO
from an agent's own episodes (`--cut-guesses` puts a guess's credit on its turn at fault).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eva_data.synth.config import DIFFICULTIES, QUESTION_TYPES, SynthConfigError

# The modules that import torch and the video stack load inside the commands, so `--help` and
# argument errors answer at once (no torch import; tests/test_cli_startup.py).


def _synth_args(sub) -> None:
    p = sub.add_parser("synth", help="generate the synthetic needle-in-video benchmark")
    p.add_argument("--out", required=True, type=Path, help="benchmark folder to write")
    p.add_argument("--n", required=True, type=int, help="number of videos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", choices=sorted(DIFFICULTIES), default="default",
                   help="preset the knobs below start from")
    knobs = p.add_argument_group("knobs (override the preset)")
    knobs.add_argument("--duration", nargs=2, type=float, metavar=("MIN", "MAX"), help="video length, s")
    knobs.add_argument("--event-length", nargs=2, type=float, metavar=("MIN", "MAX"), help="event length, s")
    knobs.add_argument("--key-events", nargs=2, type=int, metavar=("MIN", "MAX"), help="glyph-carrying shapes")
    knobs.add_argument("--distractors", nargs=2, type=int, metavar=("MIN", "MAX"), help="blank look-alike shapes")
    knobs.add_argument("--glyph-px", type=int, help="glyph height in pixels")
    knobs.add_argument("--fps", type=float)
    knobs.add_argument("--size", nargs=2, type=int, metavar=("W", "H"), help="frame size")
    knobs.add_argument("--crf", type=int, help="x264 quality")
    knobs.add_argument("--grain", type=int, help="per-frame noise amplitude (makes big files)")
    knobs.add_argument("--questions-per-video", type=int)
    knobs.add_argument("--question-types", nargs="+", choices=QUESTION_TYPES)
    p.add_argument("--workers", type=int, default=1, help="processes rendering videos")
    p.add_argument("--records", nargs="?", const="sft", choices=["sft", "kto"],
                   help="also write oracle SFT trajectories and RL prompts into the folder; 'kto' adds "
                        "rule-labelled KTO trajectories (oracle = desirable, survey-then-guess = undesirable)")
    p.add_argument("--survey-frames", nargs="+", type=int, metavar="N",
                   help="with --records: the oracle scan's frame counts to try, smallest first "
                        "(one count: the same scan for every video; default eva_data.records.oracle.SURVEY_FRAMES)")
    p.add_argument("--uniform-frames", type=int, nargs="+", default=(), metavar="N",
                   help="with --records: also write each item's uniform counterpart with N frames "
                        "(several counts: one counterpart per count)")
    p.add_argument("--look-counterparts", action="store_true",
                   help="with --records: also write each oracle trajectory's look counterpart (the frames "
                        "of its last call, then the answer: view 'look')")
    p.add_argument("--whole-looks", type=int, nargs="+", default=(), metavar="W",
                   help="with --records, on a preset whose questions name a window: a teacher that plans these "
                        "windows (0-based on the grid) poorly, looking over the whole video on "
                        "--whole-look-share of their items (eva_data.records.oracle.WholeLooks)")
    p.add_argument("--whole-look-share", type=float, default=0.7, metavar="P",
                   help="the share of the --whole-looks windows' items planned poorly")
    p.add_argument("--uniform-resize", type=float, default=0.25, metavar="R",
                   help="resize of the uniform counterparts' frames")
    p.add_argument("--shards", type=Path, help="also pack the benchmark into shards here")
    p.add_argument("--max-bytes", type=int, default=None, help="shard size cap in bytes (default: eva_data.shards.writer.DEFAULT_MAX_BYTES)")


def _tuple(value):
    return tuple(value) if value is not None else None


def run_synth(args) -> int:
    base = DIFFICULTIES[args.difficulty]
    width, height = args.size if args.size else (None, None)
    try:
        config = base.with_knobs(
            duration=_tuple(args.duration), event_length=_tuple(args.event_length), key_events=_tuple(args.key_events),
            distractor_events=_tuple(args.distractors), glyph_px=args.glyph_px, fps=args.fps, width=width,
            height=height, crf=args.crf, grain=args.grain, questions_per_video=args.questions_per_video,
            question_types=_tuple(args.question_types))
    except SynthConfigError as error:
        print(f"eva-data synth: {error}", file=sys.stderr)
        return 2
    from eva_data.records.oracle import SURVEY_FRAMES, WholeLooks, write_records
    from eva_data.records.shortcut import write_kto_records
    from eva_data.synth.benchmark import write_benchmark

    custom = config != base
    start = time.perf_counter()
    summary = write_benchmark(args.out, n=args.n, seed=args.seed, config=config,
                              difficulty="custom" if custom else args.difficulty, workers=args.workers)
    seconds = time.perf_counter() - start
    print(f"wrote {summary.n_videos} videos ({summary.video_seconds / 60:.1f} min, {summary.video_bytes / 1e6:.1f} MB) "
          f"and {summary.n_items} questions to {summary.root} in {seconds:.1f} s "
          f"({summary.video_seconds / max(seconds, 1e-9):.0f} video-seconds per second)")
    print("question types: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.items_by_type.items())))
    if args.records:
        start = time.perf_counter()
        survey = sorted(args.survey_frames or SURVEY_FRAMES)
        try:
            whole_looks = WholeLooks(tuple(args.whole_looks), args.whole_look_share)
        except ValueError as error:
            print(f"eva-data synth: {error}", file=sys.stderr)
            return 2
        records = write_records(args.out, survey_frames=survey, uniform_frames=args.uniform_frames,
                                uniform_resize=args.uniform_resize, look_counterparts=args.look_counterparts,
                                whole_looks=whole_looks)
        uniform = f" ({records.whole_looks} of them whole looks)" if args.whole_looks else ""
        uniform += f", {records.uniform} uniform counterparts" if args.uniform_frames else ""
        uniform += f", {records.looks} look counterparts" if args.look_counterparts else ""
        print(f"wrote {records.trajectories} oracle SFT trajectories ({records.skipped} items skipped: no scan of "
              f"at most {max(survey)} frames sees their evidence){uniform} and {records.rl_prompts} "
              f"RL prompts in {time.perf_counter() - start:.1f} s")
        if args.records == "kto":
            kto = write_kto_records(args.out, survey_frames=survey)
            print(f"wrote {kto.desirable} desirable (oracle) and {kto.undesirable} undesirable (survey-then-guess, "
                  f"{kto.lucky_guesses} right by chance) rule-labelled KTO trajectories")
    if args.shards:
        shards = _pack_folder(args.out, args.shards, max_bytes=args.max_bytes)
        print(f"packed into {len(shards)} shards in {args.shards}")
    return 0


def _pack_folder(source: Path, out: Path, *, video_root: Path | None = None, max_bytes: int | None = None,
                 max_count: int | None = None):
    from eva_data.records.oracle import RL_PROMPTS, TRAJECTORIES
    from eva_data.shards.writer import DEFAULT_MAX_BYTES, benchmark_samples, pack
    from eva_data.synth.benchmark import ANNOTATIONS, PLANS, VIDEO_DIR, load_plans

    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    annotations = source / ANNOTATIONS if source.is_dir() else source
    meta, trajectories = None, {}
    if source.is_dir() and (source / PLANS).is_file():
        meta = {f"{VIDEO_DIR}/{vid}.mp4": {"plan": plan.to_dict()} for vid, plan in load_plans(source).items()}
    if source.is_dir() and (source / TRAJECTORIES).is_file():
        for line in (source / TRAJECTORIES).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            trajectories.setdefault(record["episode"]["video"]["video_id"], []).append(record)
    if source.is_dir() and (source / RL_PROMPTS).is_file():  # kind "rl": what eva_train.data.shards.RlShardSource streams
        for line in (source / RL_PROMPTS).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            trajectories.setdefault(f"{VIDEO_DIR}/{record['video_key']}.mp4", []).append(record)
    samples = benchmark_samples(annotations, video_root, meta_by_video=meta, trajectories_by_video=trajectories)
    return pack(samples, out, max_bytes=max_bytes, max_count=max_count)


def run_pack(args) -> int:
    try:
        shards = _pack_folder(args.source, args.out, video_root=args.video_root, max_bytes=args.max_bytes,
                              max_count=args.max_count)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as error:
        print(f"eva-data pack: {error}", file=sys.stderr)
        return 2
    print(f"wrote {sum(s.count for s in shards)} samples into {len(shards)} shards "
          f"({sum(s.bytes for s in shards) / 1e6:.1f} MB) in {args.out}")
    return 0


def run_inspect(args) -> int:
    from eva_data.shards.summary import summarize

    sources = args.shards[0] if len(args.shards) == 1 else [str(s) for s in args.shards]
    try:
        summary = summarize(sources, examples=args.examples)
    except (FileNotFoundError, ValueError) as error:
        print(f"eva-data inspect: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0


def _build_args(sub) -> None:
    p = sub.add_parser("build", help="build EVA-SFT, EVA-KTO or EVA-RL with a teacher and a judge (resumable)")
    p.add_argument("kind", choices=("sft", "kto", "rl"))
    p.add_argument("--input", required=True, help="input shards (folder, pattern): videos with their items")
    p.add_argument("--out", required=True, type=Path, help="output folder: shards, stats.json, work/ (journal, bank)")
    p.add_argument("--teacher", default="scripted",
                   help="'scripted' (synthetic videos), a model folder, or an OpenAI-compatible server URL")
    p.add_argument("--judge", default="rule",
                   help="'rule' (items with evidence windows), a model folder, or a server URL")
    p.add_argument("--bank", type=Path, help="experience bank file (default OUT/work/bank.sqlite)")
    p.add_argument("--experiences", type=int, default=3, help="bank entries shown to the teacher per question")
    p.add_argument("--attempts", type=int, default=1, help="teacher episodes per item")
    p.add_argument("--batch-size", type=int, default=4, help="teacher episodes run and journalled together")
    p.add_argument("--desirable-fraction", type=float, default=0.63, help="KTO: share of desirable records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="use at most this many items")
    p.add_argument("--max-new-tokens", type=int, help="teacher and judge tokens a turn (default: protocol 2048, judge 512)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="teacher sampling temperature (protocol: 0, greedy); above 0 makes --attempts differ "
                        "(sampling seeded per episode by --seed)")
    p.add_argument("--as-is", action="store_true",
                   help="the policy's own episodes: no hint, reflective prompt or experiences, and replies need "
                        "not have the four parts (KTO from an agent's successes and failures)")
    p.add_argument("--cut-guesses", action="store_true",
                   help="KTO: a guess's or under-sampled look's undesirable record ends at its first call that "
                        "did not look at the evidence")
    p.add_argument("--credit", choices=("divergence", "divergence-or-turn"),
                   help="KTO: an undesirable's loss begins where it departs from a success on the same item "
                        "(--attempts above 1, --temperature above 0); an item without a success drops its "
                        "failures (divergence) or blames their turn at fault (divergence-or-turn)")
    p.add_argument("--min-frames", type=int, default=1,
                   help="rule judge: legible frames each evidence window needs (default 1; 2 or more call a wide "
                        "look that one frame happens to fall in under-sampled)")
    p.add_argument("--legible-resize", type=float, default=None,
                   help="rule judge: the smallest resize whose frames count as legible (default 0.75: glyphs; "
                        "colour shows at 0.25)")
    p.add_argument("--failures", type=Path, help="RL: failure file (RL prompt records or {video_key, item_index} lines)")
    p.add_argument("--unseen", help="RL: shards of unseen videos to write new open-ended questions about")
    p.add_argument("--questions-per-video", type=int, default=2, help="RL: new questions per unseen video")
    p.add_argument("--max-bytes", type=int, default=None, help="output shard size cap in bytes (default: eva_data.shards.writer.DEFAULT_MAX_BYTES)")
    p.add_argument("--no-progress", action="store_true")


def run_build(args) -> int:
    from eva_core.agent import AgentConfig
    from eva_core.backends import load_policy
    from eva_core.policy import GenerationConfig

    from eva_data.construct.bank import ExperienceBank
    from eva_data.construct.build import (
        BuildConfig,
        build_rl_set,
        build_teacher_set,
        rule_judge_many,
    )
    from eva_data.construct.judge import VERDICT_GENERATION, LlmJudge, RuleJudgeConfig
    from eva_data.construct.scripted_teacher import ScriptedTeacher
    from eva_data.construct.teacher import TeacherConfig

    def progress(done: int, total: int, note: str) -> None:
        if not args.no_progress:
            print(f"[{done:>5}/{total}] {100 * done / max(1, total):3.0f}%  {note}", file=sys.stderr, flush=True)

    tokens = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    try:
        seeded = {"seed": args.seed} if args.temperature > 0 else {}
        agent = AgentConfig(generation=GenerationConfig(temperature=args.temperature, **tokens, **seeded))
        teacher_config = (TeacherConfig.as_is(seed=args.seed, agent=agent) if args.as_is
                          else TeacherConfig(experiences=args.experiences, seed=args.seed, agent=agent))
        config = BuildConfig(kind=args.kind, attempts=args.attempts, batch_size=args.batch_size,
                             desirable_fraction=args.desirable_fraction, seed=args.seed, limit=args.limit,
                             **({} if args.max_bytes is None else {"max_bytes": args.max_bytes}),
                             questions_per_video=args.questions_per_video, teacher=teacher_config,
                             four_parts=not args.as_is, cut_guesses=args.cut_guesses, min_frames=args.min_frames,
                             credit=args.credit)
        legible = {"min_frames": args.min_frames}
        if args.legible_resize is not None:
            legible["legible_resize"] = args.legible_resize
        if args.kind == "rl":
            if args.teacher != "scripted":
                print("eva-data build rl: only the scripted question writer is built; use --teacher scripted",
                      file=sys.stderr)
                return 2
            if args.failures is None and args.unseen is None:
                print("eva-data build rl: give --failures, --unseen or both", file=sys.stderr)
                return 2
            stats = build_rl_set(args.input, args.out, failures=args.failures, unseen=args.unseen, config=config,
                                 progress=progress)
        else:
            teacher = ScriptedTeacher(seed=args.seed) if args.teacher == "scripted" else load_policy(args.teacher)
            judge = rule_judge_many(RuleJudgeConfig(**legible)) if args.judge == "rule" else LlmJudge(
                load_policy(args.judge), name=args.judge,
                generation=GenerationConfig(**tokens) if tokens else VERDICT_GENERATION).judge_many
            with ExperienceBank(args.bank or args.out / "work" / "bank.sqlite") as bank:
                stats = build_teacher_set(args.input, args.out, policy=teacher, judge=judge, config=config, bank=bank,
                                          progress=progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"eva-data build: {error}", file=sys.stderr)
        return 2
    print("\n".join(stats.lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eva-data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _synth_args(sub)
    p = sub.add_parser("pack", help="pack a benchmark folder or unified-format jsonl into shards")
    p.add_argument("source", type=Path, help="benchmark folder (with annotations.jsonl) or a .jsonl file")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--video-root", type=Path, help="folder the videos paths are relative to")
    p.add_argument("--max-bytes", type=int, default=None, help="shard size cap in bytes (default: eva_data.shards.writer.DEFAULT_MAX_BYTES)")
    p.add_argument("--max-count", type=int, help="samples per shard cap")
    p = sub.add_parser("inspect", help="counts, durations and a few samples of shards")
    p.add_argument("shards", nargs="+", help="shard folder, brace pattern, or shard files")
    p.add_argument("--examples", type=int, default=3)
    _build_args(sub)
    args = parser.parse_args(argv)
    return {"synth": run_synth, "pack": run_pack, "inspect": run_inspect, "build": run_build}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

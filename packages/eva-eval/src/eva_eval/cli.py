"""`eva-eval`: run benchmarks, report runs, compare runs, list the registry.

    eva-eval run --benchmark NAME --annotations FILE --video-root DIR --model PATH_OR_URL \\
                 --mode agent|uniform --out DIR [--limit N] [--items ID,ID] [--retry-errors] ...
    eva-eval report DIR [--html FILE]        table beside the paper's figures + HTML report
    eva-eval compare RUN_A RUN_B [--tolerance POINTS] [--alpha P] [--across-modes]   exit 1 on a regression
    eva-eval inspect --benchmark NAME --annotations FILE [--video-root DIR]   load and count quirks
    eva-eval list                            benchmarks and their published figures

`--model` takes what `eva_core.backends.load_policy` takes (a local checkpoint folder, or the
URL of an OpenAI-compatible server), or `scripted:FILE` for a JSON list of fixed replies
(`eva_core.scripted.ScriptedPolicy`: a dry run of the harness without a model).

Exit status: 0 done; 1 `compare` found a regression; 2 bad usage or input (unknown benchmark,
unreadable annotations, a run directory holding another run); 3 the run stopped because the
backend kept failing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from eva_core.policy import Policy

from eva_eval.compare import DEFAULT_ALPHA, DEFAULT_TOLERANCE

# The commands' modules import torch (eva-core's frame tool, through the runner): they are imported
# after the arguments parse, and `run`'s options default to None and take their values from the
# classes then (`run_settings`), so that every `--help` answers at once (importing them costs about 5 s of CPU).
if TYPE_CHECKING:
    from eva_eval.runner import RunSettings


def load_model(model: str, *, concurrency: int | None = None) -> Policy:
    """A policy for `--model`: `scripted:FILE`, or whatever `eva_core.backends.load_policy` takes."""
    from eva_core.decoders import preload

    # The decoder's import (7-10 s for torchcodec) overlaps the model's load; `run_items` waits for it.
    threading.Thread(target=preload, name="eva-preload-decoder", daemon=True).start()
    if model.startswith("scripted:"):
        from eva_core.scripted import ScriptedPolicy

        return ScriptedPolicy(json.loads(Path(model.removeprefix("scripted:")).read_text(encoding="utf-8")))
    from eva_core.backends import load_policy

    is_url = model.startswith(("http://", "https://"))
    return load_policy(model, max_concurrency=concurrency) if is_url and concurrency else load_policy(model)


def _newline_flags(p) -> None:
    p.add_argument("--decode-newlines", action="store_true",
                   help="turn literal backslash-n in questions into newlines (default: send them as released)")
    p.add_argument("--raw-prompts", dest="decode_newlines", action="store_false",
                   help="the default; kept for old command lines")


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="run a benchmark into a run directory (resumes by default)")
    p.add_argument("--benchmark", required=True, help="registry name (see `eva-eval list`)")
    p.add_argument("--annotations", required=True, type=Path, help="annotation file (unified jsonl)")
    p.add_argument("--video-root", type=Path, help="folder holding the videos (default: the annotation file's folder)")
    p.add_argument("--model", required=True, help="checkpoint folder, server URL, or scripted:FILE")
    p.add_argument("--mode", help="agent: the EVA loop (default); uniform: the passive baseline")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--limit", type=int, help="run only the first N items")
    p.add_argument("--items", help="comma-separated item ids to run")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="refuse a directory with results")
    p.add_argument("--retry-errors", action="store_true", help="run again the items whose records are errors")
    # Unset options take `RunSettings`', `AgentConfig`'s (the protocol's) and `UniformConfig`'s defaults,
    # read after parsing; the help writes them out (tests/test_cli_startup.py checks it against the classes).
    p.add_argument("--batch-size", type=int, help="episodes per lockstep batch (default 4)")
    p.add_argument("--workers", type=int, help="batches in flight (overlaps decoding with the model; default 1)")
    p.add_argument("--concurrency", type=int, help="HTTP backend: requests in flight")
    _newline_flags(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.add_argument_group("agent mode (protocol defaults)")
    a.add_argument("--max-turns", type=int, help="assistant turns (default: the protocol's, 6)")
    a.add_argument("--budget", type=int, help="visual tokens per tool call (default: the protocol's, 12000)")
    a.add_argument("--maxp", type=int, help="short-side cap when over budget (default: the protocol's, 720)")
    a.add_argument("--max-new-tokens", type=int, help="per turn (default: the protocol's, 2048)")
    a.add_argument("--frame-rule", help="frame for a sample time: rounded_index, the released tool's rounded index "
                                        "(default: the protocol's), or played_at, the frame played at it")
    a.add_argument("--all-tool-blocks", action="store_true", help="read every <tool_call> block of a reply")
    u = p.add_argument_group("uniform mode")
    u.add_argument("--frames", type=int, help="frames sampled uniformly (default 32)")
    u.add_argument("--resize", type=float, help="scale factor on both sides (default 1)")
    u.add_argument("--short-side", type=int, help="target short side in pixels (overrides --resize)")


def run_settings(args) -> RunSettings:
    """The settings `eva-eval run` parsed into; unset options take `RunSettings`', `AgentConfig`'s and
    `UniformConfig`'s defaults (a bad value raises their ValueError)."""
    from eva_core.agent import AgentConfig
    from eva_core.policy import GenerationConfig

    from eva_eval.runner import RunSettings
    from eva_eval.uniform import UniformConfig

    def given(**options):
        return {k: v for k, v in options.items() if v is not None}

    generation = GenerationConfig(**given(max_new_tokens=args.max_new_tokens))
    return RunSettings(
        **given(mode=args.mode, batch_size=args.batch_size, workers=args.workers), progress=args.progress,
        agent=AgentConfig(**given(max_turns=args.max_turns, budget=args.budget, maxp=args.maxp,
                                  frame_rule=args.frame_rule),
                          generation=generation, all_tool_blocks=args.all_tool_blocks),
        uniform=UniformConfig(**given(nframes=args.frames, resize=args.resize), short_side=args.short_side,
                              generation=generation),
    )


def cmd_run(args) -> int:
    from eva_eval.benchmarks import get_benchmark
    from eva_eval.runner import select_items
    from eva_eval.runs import check_resumable, evaluate, find_runs, run_info
    from eva_eval.tables import report_lines

    settings = run_settings(args)  # before the annotations load: a bad option is refused at once
    benchmark = get_benchmark(args.benchmark)
    video_root = args.video_root or args.annotations.parent
    loaded = benchmark.load(args.annotations, video_root=video_root, decode_newlines=args.decode_newlines)
    print("\n".join(loaded.report.lines()), file=sys.stderr)
    info = run_info(benchmark, settings, model=args.model, annotations=args.annotations, video_root=video_root,
                    decode_newlines=args.decode_newlines)
    ids = [i.strip() for i in args.items.split(",") if i.strip()] if args.items else None
    chosen = select_items(loaded.items, ids=ids, limit=args.limit)
    if chosen and all(item.video is None for item in chosen):  # every item would be an error record
        reasons = sorted({str(item.unresolved) for item in chosen})
        hint = "" if args.video_root else "; give --video-root"
        print(f"eva-eval: no video of the {len(chosen)} items resolves under {video_root} ({', '.join(reasons)}){hint}",
              file=sys.stderr)
        return 2
    check_resumable(args.out, info, resume=args.resume)  # before the weights load
    policy = load_model(args.model, concurrency=args.concurrency)
    outcome = evaluate(policy, benchmark, loaded, args.out, settings, info, resume=args.resume,
                       retry_errors=args.retry_errors, ids=ids, limit=args.limit)
    s = outcome.stats
    if outcome.dropped_torn_bytes:
        print(f"dropped a torn last line ({outcome.dropped_torn_bytes} bytes) left by an interrupted run",
              file=sys.stderr)
    print(f"ran {s.ran} items ({s.errors} errors), {s.skipped} already done, {len(outcome.retried)} retried, "
          f"in {s.seconds:.1f} s")
    print("\n".join(report_lines(find_runs(args.out))))
    return 0


def cmd_report(args) -> int:
    from eva_eval.html_report import write_report
    from eva_eval.runs import find_runs
    from eva_eval.tables import report_lines

    runs = find_runs(args.dir)
    print("\n".join(report_lines(runs)))
    if args.html is not False:
        out = args.html or (Path(args.dir) / "report.html")
        write_report(runs, out, max_items=args.max_items, thumb_items=args.thumb_items)
        print(f"\nHTML report: {out}")
    return 0


def cmd_compare(args) -> int:
    from eva_eval.compare import compare_runs
    from eva_eval.runs import find_runs

    comparison = compare_runs(find_runs(args.run_a), find_runs(args.run_b), tolerance=args.tolerance,
                              alpha=args.alpha, across_modes=args.across_modes)
    print("\n".join(comparison.lines()))
    if not comparison.pairs:
        print("nothing to compare: no benchmark and mode in common", file=sys.stderr)
        return 2
    if comparison.regressed:
        print(f"REGRESSION: B is worse than A by more than {args.tolerance} points (p < {args.alpha})",
              file=sys.stderr)
        return 1
    return 0


def cmd_inspect(args) -> int:
    from eva_eval.benchmarks import get_benchmark

    benchmark = get_benchmark(args.benchmark)
    loaded = benchmark.load(args.annotations, video_root=args.video_root, decode_newlines=args.decode_newlines)
    print("\n".join(loaded.report.lines()))
    for item_id, ref, reason in loaded.report.unresolved[:args.show_unresolved]:
        print(f"  unresolved {item_id}: {ref} ({reason})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eva-eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    r = sub.add_parser("report", help="results table and HTML report of a run or a folder of runs")
    r.add_argument("dir", type=Path)
    r.add_argument("--html", type=Path, help="where to write the HTML (default DIR/report.html)")
    r.add_argument("--no-html", dest="html", action="store_false")
    r.add_argument("--max-items", type=int, default=200, help="items per run in the viewer")
    r.add_argument("--thumb-items", type=int, default=40, help="items per run with frame thumbnails")
    c = sub.add_parser("compare", help="B against A, item by item; exit 1 when B regressed")
    c.add_argument("run_a", type=Path)
    c.add_argument("run_b", type=Path)
    c.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="accuracy points B may lose")
    c.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (1 = ignore)")
    c.add_argument("--across-modes", action="store_true",
                   help="pair runs by benchmark alone (an agent run against a uniform run of the same items)")
    i = sub.add_parser("inspect", help="load an annotation file and count its quirks")
    i.add_argument("--benchmark", required=True)
    i.add_argument("--annotations", required=True, type=Path)
    i.add_argument("--video-root", type=Path)
    _newline_flags(i)
    i.add_argument("--show-unresolved", type=int, default=0, help="list the first N unresolved videos")
    sub.add_parser("list", help="benchmarks and their published figures")
    return parser


def cmd_list(args) -> int:
    from eva_eval.tables import registry_lines

    print("\n".join(registry_lines()))
    return 0


def _exit_status(error: Exception) -> int | None:
    """Print a command's error in one line and give its exit status; None for an unexpected error.

    The error classes are imported here, once an error is raised: the runner's module imports
    torch, which `list` never needs (tests/test_cli_startup.py holds it to that).
    """
    from eva_eval.annotations import AnnotationError
    from eva_eval.benchmarks import UnknownBenchmark
    from eva_eval.results import ResultFileError
    from eva_eval.runner import RunAborted, UnknownItems

    if isinstance(error, UnknownBenchmark | UnknownItems):  # KeyErrors: print the message, not its repr
        message, status = error.args[0], 2
    elif isinstance(error, AnnotationError | ResultFileError | FileNotFoundError | ValueError):  # RunMismatch too
        message, status = error, 2
    elif isinstance(error, RunAborted):
        message, status = error, 3
    else:
        return None
    print(f"eva-eval: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "inspect": cmd_inspect,
                "list": cmd_list}
    try:
        return commands[args.command](args)
    except Exception as error:
        status = _exit_status(error)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())

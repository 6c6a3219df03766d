"""Reading the unified annotation format of the released evaluation (docs/protocol.md, "Published figures").

One JSON object a line:
    {"videos": [path], "prompt": [{"role": "user", "content": str}, ...],
     "reward_model": {"ground_truth": "C", ...}, "index": 17, ...extra fields}

Quirks met in the real files, and what is done about each (counted in the `LoadReport`):
- absolute paths from another machine (all of MLVU): resolved by relative tail under the video
  root (`video_paths.resolve_video`); what stays unresolved is listed.
- literal backslash-n sequences in questions (all of LVBench and LSDBench, some of Video-Holmes):
  sent as they are by default, the two characters, as the released evaluation sent them (the
  released checkpoint's figures were measured so); `decode_newlines=True` (`eva-eval run
  --decode-newlines`) turns them into newlines. Options are found either way.
- 3 to 6 options (LongVideoBench has 3-, 4- and 5-option items; Video-Holmes has 6).
- corrupt ground truths (two MLVU items have `@`, where an option text is empty): kept, flagged,
  and always scored as wrong, as the released scorer's exact match does in effect.

A line that is not valid JSON or lacks a required field raises `AnnotationError` naming the line:
an annotation file must load completely or not at all.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from eva_eval.items import AnswerKind, BenchmarkItem, LoadedBenchmark, LoadReport, Quirk
from eva_eval.scoring import yes_no
from eva_eval.video_paths import resolve_video

UNIFIED_FIELDS = frozenset({"videos", "prompt", "reward_model", "index", "data_source", "ability"})

# An option line: "A. text", "A: text", "(A) text", "A) text", or a bare "(D)" with no text.
_OPTION = re.compile(r"^\s*\(?([A-Z])(?:\)|\.|:)(?:\s+(.*))?\s*$")

CategoryFn = Callable[[dict[str, Any], str], Sequence[str]]
"""(annotation record, video path as written) -> the item's categories."""
KindFn = Callable[[dict[str, Any]], AnswerKind]
"""annotation record -> how its answer is scored (for benchmarks that mix kinds)."""


class AnnotationError(ValueError):
    """An annotation file that cannot be read as the format says.

    Args:
        source: the file.
        line: 1-based line number, or 0 for the whole file.
        message: what is wrong.
    """

    def __init__(self, source: Path, line: int, message: str):
        where = f"{source}:{line}" if line else str(source)
        super().__init__(f"{where}: {message}")
        self.source, self.line = source, line


def find_options(question: str) -> list[tuple[str, str]]:
    """The option lines of a multiple-choice question: the last run of lines lettered A, B, C...

    Lines between two options that are not options themselves (blank lines, as in four
    LongVideoBench items; prose, as in Video-Holmes item 488, whose option B runs over a blank
    line and a paragraph) belong to the option before them; lines after the last option do not.
    A new "A" line starts a new run.

    Returns:
        [(letter, text), ...] in order, an option's text its lines joined by newlines; empty
        when the question has no lettered run of at least two options.
    """
    best: list[tuple[str, str]] = []
    run: list[tuple[str, str]] = []
    pending: list[str] = []  # non-option lines since the last option of the run
    for line in question.split("\n"):
        m = _OPTION.match(line) if line.strip() else None
        if m and ord(m.group(1)) - ord("A") == len(run) and run:
            letter, text = run[-1]
            run[-1] = (letter, "\n".join([text, *pending]).strip())
            run.append((m.group(1), (m.group(2) or "").strip()))
            pending = []
        elif m and m.group(1) == "A":
            if len(run) >= 2:
                best = run
            run, pending = [("A", (m.group(2) or "").strip())], []
        elif run:
            pending.append(line)
    return run if len(run) >= 2 else best


def _text(content: Any) -> str:
    """A turn's text: a string, or the text parts of a list of parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise TypeError(f"turn content must be a string or a list of parts, got {type(content).__name__}")


def iter_records(source: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line.

    Raises:
        AnnotationError: a line that is not a JSON object.
    """
    with open(source, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnnotationError(source, number, f"not valid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise AnnotationError(source, number, "a line must hold a JSON object")
            yield number, record


def list_in_string(value: Any) -> list | None:
    """The list a string spells as a Python or JSON literal (LVBench's question_type is
    "['entity recognition', 'event understanding']"); None for anything else."""
    if not (isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]")):
        return None
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return None
    return parsed if isinstance(parsed, list) else None


def _raw_extras(record: dict[str, Any]) -> dict[str, Any]:
    extra = {k: v for k, v in record.items() if k not in UNIFIED_FIELDS}
    info = extra.pop("extra_info", None)
    if isinstance(info, dict):
        extra.update({k: v for k, v in info.items() if k not in extra})
    return extra


def _extras(record: dict[str, Any]) -> dict[str, Any]:
    """The record's fields beyond the unified format's, `extra_info` merged in, and lists
    written as strings read as lists."""
    extra = _raw_extras(record)
    for key, value in extra.items():
        parsed = list_in_string(value)
        if parsed is not None:
            extra[key] = parsed
    return extra


def field_key(name: str) -> str:
    """A field name as compared: case, spaces, underscores and dashes ignored, so that
    `question_type`, `Question Type` and Video-Holmes' `Question_Type` are one field."""
    return re.sub(r"[\s_-]", "", name).lower()


def field_categories(*names: str) -> CategoryFn:
    """Categories taken from the record's extra fields `names`, every one present.

    Names match whatever their spelling (`field_key`). A string or number is one category; a
    list, or a list written as a string, is several (LVBench's question types): the item then
    counts under each of them. Repeats within an item count once.
    """
    keys = [field_key(n) for n in names]

    def categories(record: dict[str, Any], video_ref: str) -> Sequence[str]:
        by_key: dict[str, Any] = {}
        for field_name, value in _extras(record).items():
            by_key.setdefault(field_key(field_name), value)
        found: list[str] = []
        for key in keys:
            value = by_key.get(key)
            values = value if isinstance(value, list) else [value]
            found.extend(str(v) for v in values if v not in (None, "") and not isinstance(v, (dict, list)))
        return list(dict.fromkeys(found))
    return categories


def _valid_range(value: Any) -> bool:
    """[lo, hi] with lo <= hi, both numbers."""
    return (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            and value[0] <= value[1])


def _ground_truth(record: dict[str, Any], kind: AnswerKind) -> str:
    reward = record.get("reward_model")
    if isinstance(reward, dict) and "ground_truth" in reward:
        gt = reward["ground_truth"]
    elif "ref_answer" in record:
        gt = record["ref_answer"]
    else:
        raise KeyError("reward_model.ground_truth")
    if isinstance(gt, list) and len(gt) == 1:
        gt = gt[0]
    gt = "" if gt is None else str(gt)
    if kind is AnswerKind.YES_NO:
        return yes_no(gt) or gt
    return gt


def parse_record(record: dict[str, Any], *, benchmark: str, kind: AnswerKind | KindFn, video_root: Path | None,
                 categories: CategoryFn | None = None, decode_newlines: bool = False,
                 fallback_id: str = "") -> BenchmarkItem:
    """One unified-format record -> a `BenchmarkItem`.

    Raises:
        KeyError, TypeError, ValueError: a required field is missing or malformed.
    """
    quirks: list[Quirk] = []
    kind = kind if isinstance(kind, AnswerKind) else kind(record)
    videos = record["videos"]
    if isinstance(videos, str):
        videos = [videos]
    if not isinstance(videos, list) or len(videos) != 1 or not isinstance(videos[0], str):
        raise ValueError(f"`videos` must be a list holding one path, got {videos!r}")
    turns = record["prompt"]
    if not isinstance(turns, list) or not turns:
        raise ValueError("`prompt` must be a non-empty list of turns")
    system = next((_text(t["content"]) for t in turns if t.get("role") == "system"), None)
    users = [_text(t["content"]) for t in turns if t.get("role") == "user"]
    if not users:
        raise ValueError("`prompt` has no user turn")
    question = users[0]  # the first user turn, as eva_core.protocol reads it
    if system is not None:
        quirks.append(Quirk.SYSTEM_TURN)
    if "\\n" in question:
        quirks.append(Quirk.ESCAPED_NEWLINES)
        if decode_newlines:
            question = question.replace("\\n", "\n")

    ground_truth = _ground_truth(record, kind)
    options: tuple[str, ...] = ()
    if kind is AnswerKind.CHOICE:
        found = find_options(question if decode_newlines else question.replace("\\n", "\n"))
        options = tuple(letter for letter, _ in found)
        if any(not text for _, text in found):
            quirks.append(Quirk.EMPTY_OPTION)
        if any("\n" in text for _, text in found):
            quirks.append(Quirk.MULTILINE_OPTION)
        gt = ground_truth.strip().upper()
        valid = gt in options if options else bool(re.fullmatch(r"[A-Z]", gt))
        if not valid:
            quirks.append(Quirk.CORRUPT_GROUND_TRUTH)
    elif kind is AnswerKind.YES_NO and ground_truth not in ("yes", "no") or kind is AnswerKind.NUMBER and not _valid_range(_extras(record).get("answer_range")):
        quirks.append(Quirk.CORRUPT_GROUND_TRUTH)

    resolution = resolve_video(videos[0], video_root)
    if resolution.absolute:
        quirks.append(Quirk.ABSOLUTE_PATH)
    if resolution.path is None:
        quirks.append(Quirk.UNRESOLVED_VIDEO)
    raw_extra = _raw_extras(record)
    if raw_extra:
        quirks.append(Quirk.EXTRA_FIELDS)
    if any(list_in_string(v) is not None for v in raw_extra.values()):
        quirks.append(Quirk.LIST_IN_STRING)
    extra = _extras(record)
    index = record.get("index", fallback_id)
    return BenchmarkItem(
        id=str(index), benchmark=benchmark, question=question, ground_truth=ground_truth, answer_kind=kind,
        video_ref=videos[0], video=resolution.path, unresolved=resolution.reason, system=system,
        options=options, categories=tuple(categories(record, videos[0])) if categories else (),
        extra=extra, quirks=tuple(quirks),
    )


def load_unified(source: Path | str, *, benchmark: str, kind: AnswerKind | KindFn, video_root: Path | str | None,
                 categories: CategoryFn | None = None, decode_newlines: bool = False) -> LoadedBenchmark:
    """Load a whole unified-format jsonl file.

    Args:
        source: the annotation file.
        benchmark: registry name written into every item.
        kind: how answers are scored, or a function of the record giving it.
        video_root: where the videos are; None loads annotations without resolving videos.
        categories: how to read an item's categories from its record.
        decode_newlines: turn literal backslash-n sequences into newlines (default: send the
            question as the file writes it, as the released evaluation did).

    Raises:
        AnnotationError: a malformed line or a duplicated item id.
        FileNotFoundError: no such annotation file.
    """
    source = Path(source)
    root = Path(video_root) if video_root is not None else None
    report = LoadReport(benchmark=benchmark, source=source)
    items: list[BenchmarkItem] = []
    seen: dict[str, int] = {}
    for number, record in iter_records(source):
        try:
            item = parse_record(record, benchmark=benchmark, kind=kind, video_root=root, categories=categories,
                                decode_newlines=decode_newlines, fallback_id=str(number - 1))
        except (KeyError, TypeError, ValueError) as error:
            raise AnnotationError(source, number, f"{type(error).__name__}: {error}") from error
        if item.id in seen:
            raise AnnotationError(source, number, f"item id {item.id!r} already used on line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
        report.add(item)
    if not items:
        raise AnnotationError(source, 0, "no items")
    return LoadedBenchmark(items=items, report=report)

"""eva-eval: the registry, the unified annotation loader on the four real files, and safe paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eva_eval.annotations import AnnotationError, find_options, load_unified
from eva_eval.benchmarks import REGISTRY, UnknownBenchmark, get_benchmark
from eva_eval.items import AnswerKind, Quirk
from eva_eval.video_paths import Unresolved, resolve_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
if not SHARED.exists():  # CI clones main with shared/ beside it
    SHARED = Path("/work/shared/benchmarks")

# Line counts of the shipped files (wc -l), and what a python one-liner over them found.
EXPECTED = {
    "videomme": dict(items=2700, options={4: 2700}, quirks={}),
    "longvideobench": dict(items=1337, options={3: 1, 4: 353, 5: 983}, quirks={}),
    "mlvu": dict(items=2174, options={4: 2174},
                 quirks={Quirk.ABSOLUTE_PATH: 2174, Quirk.CORRUPT_GROUND_TRUTH: 2, Quirk.EMPTY_OPTION: 3}),
    "lsdbench": dict(items=1304, options={4: 1304}, quirks={Quirk.ESCAPED_NEWLINES: 1304}),
}


def test_registry_has_the_seven_benchmarks_and_the_synthetic_one():
    assert set(REGISTRY) == {"videomme", "longvideobench", "mlvu", "lsdbench", "lvbench", "video_holmes",
                             "elv_halluc", "synthetic"}
    assert get_benchmark("Video-Holmes").name == "video_holmes"
    assert get_benchmark("MLVU").reference.accuracy == 68.26
    assert get_benchmark("elv-halluc").reference.extra == {"sah_qwen2.5-vl-7b": 8.8, "sah_eva": 5.0}
    with pytest.raises(UnknownBenchmark, match="unknown benchmark 'nope'; known: videomme"):
        get_benchmark("nope")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_file_loads_completely(name, capsys):
    benchmark = get_benchmark(name)
    path = SHARED / benchmark.shared_file
    loaded = benchmark.load(path, video_root=None)
    report = loaded.report
    print("\n".join(report.lines()))
    with open(path) as f:
        lines = sum(1 for line in f if line.strip())
    assert report.items == len(loaded.items) == lines == EXPECTED[name]["items"]
    assert dict(report.option_counts) == EXPECTED[name]["options"]
    quirks = {q: c for q, c in report.quirks.items() if q != Quirk.UNRESOLVED_VIDEO}
    assert quirks == EXPECTED[name]["quirks"]
    assert report.quirks[Quirk.UNRESOLVED_VIDEO] == lines  # no video root given
    assert len({i.id for i in loaded.items}) == lines
    for item in loaded.items:
        # sent as the file writes it (the released evaluation's prompt), backslash-n included
        assert ("\\n" in item.question) == (Quirk.ESCAPED_NEWLINES in item.quirks)
        assert item.corrupt or item.ground_truth in item.options
    assert f"{name}: {lines} items" in capsys.readouterr().out


def test_mlvu_quirks_in_detail():
    loaded = get_benchmark("mlvu").load(SHARED / "MLVU_MCQ_raw_full.jsonl", video_root=None)
    assert loaded.report.corrupt == [("1013", "@"), ("1207", "@")]
    assert dict(loaded.report.categories) == {"plotQA": 539, "needle": 355, "ego": 352, "topic_reasoning": 263,
                                              "order": 259, "count": 206, "anomaly_reco": 200}
    item = loaded.items[0]
    assert item.video_ref.startswith("/mnt/afs/") and item.categories == ("plotQA",)


def test_lsdbench_newlines_kept_as_released_by_default_or_decoded():
    path = SHARED / "LSDBench_raw_full.jsonl"
    raw = get_benchmark("lsdbench").load(path, video_root=None).items[0]
    decoded = get_benchmark("lsdbench").load(path, video_root=None, decode_newlines=True).items[0]
    assert decoded.question.split("\n")[1].startswith("A: Picked up a tape measure")
    assert "\\nA: Picked up" in raw.question and "\n" not in raw.question
    assert decoded.options == raw.options == ("A", "B", "C", "D")


def test_mlvu_absolute_paths_resolve_by_tail_under_a_root(tmp_path):
    # Lay out two of MLVU's videos as the benchmark ships them, and one flat.
    (tmp_path / "MLVU/video/1_plotQA").mkdir(parents=True)
    (tmp_path / "MLVU/video/1_plotQA/movie101_66.mp4").write_bytes(b"x")
    (tmp_path / "xiaoliyu_6.mp4").write_bytes(b"x")
    loaded = get_benchmark("mlvu").load(SHARED / "MLVU_MCQ_raw_full.jsonl", video_root=tmp_path)
    by_id = {i.id: i for i in loaded.items}
    assert by_id["0"].video == (tmp_path / "MLVU/video/1_plotQA/movie101_66.mp4").resolve()
    assert by_id["1"].video == (tmp_path / "xiaoliyu_6.mp4").resolve()
    assert by_id["2"].video is None and by_id["2"].unresolved is Unresolved.NOT_FOUND
    laid_out = sum(i.video_ref.endswith(("/movie101_66.mp4", "/xiaoliyu_6.mp4")) for i in loaded.items)
    assert laid_out >= 2 and len(loaded.report.unresolved) == 2174 - laid_out


def test_paths_never_leave_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    (root / "ok.mp4").write_bytes(b"x")
    os.symlink(outside / "secret.mp4", root / "link.mp4")  # a link inside the root pointing out
    os.symlink(outside, root / "sub" / "out")               # a linked folder pointing out
    os.symlink(root / "ok.mp4", root / "sub" / "inner.mp4")  # a link that stays inside
    assert resolve_video("../outside/secret.mp4", root).reason is Unresolved.ESCAPES_ROOT
    assert resolve_video("sub/../../outside/secret.mp4", root).reason is Unresolved.ESCAPES_ROOT
    assert resolve_video(str(outside / "secret.mp4"), root).reason is Unresolved.NOT_FOUND
    assert resolve_video("link.mp4", root).reason is Unresolved.ESCAPES_ROOT
    assert resolve_video("sub/out/secret.mp4", root).reason is Unresolved.ESCAPES_ROOT
    assert resolve_video("/elsewhere/sub/inner.mp4", root).path == (root / "ok.mp4").resolve()
    assert resolve_video("/a/b/ok.mp4", root).path == (root / "ok.mp4").resolve()
    assert resolve_video("sub", root).reason is Unresolved.NOT_FOUND  # a folder is not a video
    assert resolve_video("", root).reason is Unresolved.EMPTY_PATH
    assert resolve_video("C:\\data\\ok.mp4", root).path == (root / "ok.mp4").resolve()


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _record(index, question="Q?\nA. x\nB. y", gt="A", video="v.mp4", **extra):
    return {"videos": [video], "prompt": [{"role": "user", "content": question}],
            "reward_model": {"ground_truth": gt}, "index": index, **extra}


def test_six_options_extra_fields_and_system_turns(tmp_path):
    six = "Who did it?\n(A) a\n(B) b\n(C) c\n(D) d\n(E) e\n(F) f"
    rec = _record(0, question=six, gt="F", question_type=["TCI", "MHR"])
    rec["prompt"].insert(0, {"role": "system", "content": "Be brief."})
    loaded = get_benchmark("video_holmes").load(_write(tmp_path / "a.jsonl", [rec]), video_root=None)
    item = loaded.items[0]
    assert item.options == ("A", "B", "C", "D", "E", "F") and item.ground_truth == "F"
    assert item.categories == ("TCI", "MHR") and item.system == "Be brief."
    assert set(item.quirks) == {Quirk.SYSTEM_TURN, Quirk.EXTRA_FIELDS, Quirk.UNRESOLVED_VIDEO}


def test_malformed_files_raise_with_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record(0)) + "\n{not json\n")
    with pytest.raises(AnnotationError, match=r"bad.jsonl:2: not valid JSON"):
        get_benchmark("videomme").load(bad, video_root=None)
    dup = _write(tmp_path / "dup.jsonl", [_record(0), _record(0)])
    with pytest.raises(AnnotationError, match=r"dup.jsonl:2: item id '0' already used on line 1"):
        get_benchmark("videomme").load(dup, video_root=None)
    missing = _write(tmp_path / "missing.jsonl", [{"videos": ["v.mp4"], "index": 0}])
    with pytest.raises(AnnotationError, match=r"missing.jsonl:1: KeyError"):
        get_benchmark("videomme").load(missing, video_root=None)
    two = _write(tmp_path / "two.jsonl", [_record(0, video=["a.mp4", "b.mp4"])])
    with pytest.raises(AnnotationError, match="one path"):
        load_unified(two, benchmark="x", kind=AnswerKind.CHOICE, video_root=None)


def test_elv_halluc_triplets_are_checked_and_numbered(tmp_path):
    def rec(i, kind, aspect="objects"):
        return _record(i, question="A dog runs.", gt=None, caption_type=kind, aspect=aspect, part_nums=1,
                       ref_answer="yes" if kind == "ground_truth" else "no") | {"reward_model": {}}
    good = [rec(0, "ground_truth"), rec(1, "in_video"), rec(2, "out_video"),
            rec(3, "out_video", "actions"), rec(4, "ground_truth", "actions"), rec(5, "in_video", "actions")]
    loaded = get_benchmark("elv_halluc").load(_write(tmp_path / "e.jsonl", good), video_root=None)
    assert [i.extra["triplet"] for i in loaded.items] == [0, 0, 0, 1, 1, 1]
    assert [i.ground_truth for i in loaded.items] == ["yes", "no", "no", "no", "yes", "no"]
    assert loaded.items[0].question.startswith("Is the following caption totally correct? Reply with 'Yes'")
    assert loaded.items[3].categories == ("actions",)
    broken = good[:2] + [rec(2, "in_video")]
    with pytest.raises(AnnotationError, match="not a triplet"):
        get_benchmark("elv_halluc").load(_write(tmp_path / "b.jsonl", broken), video_root=None)


def test_find_options_styles():
    assert find_options("Q\nA. a\nB. b") == [("A", "a"), ("B", "b")]
    assert find_options("Q\\n\nA: a\nB: b\nC: c") == [("A", "a"), ("B", "b"), ("C", "c")]
    assert find_options("A. first run\nB. x\nsome text\nA) a\nB) b\nC)") == [("A", "a"), ("B", "b"), ("C", "")]
    assert find_options("A man walks.\nWhat next?") == []


def test_cli_list_and_inspect(capsys, tmp_path):
    from eva_eval.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mlvu" in out and "68.26" in out and "sah_eva 5.0" in out
    (tmp_path / "x.mp4").write_bytes(b"x")
    assert main(["inspect", "--benchmark", "lsdbench", "--annotations", str(SHARED / "LSDBench_raw_full.jsonl"),
                 "--video-root", str(tmp_path), "--show-unresolved", "1"]) == 0
    out = capsys.readouterr().out
    assert "lsdbench: 1304 items" in out and "quirk escaped_newlines: 1304" in out
    assert "unresolved 0: 71fbc5bf-7e2a-415d-86bc-3a948742e904.mp4 (not_found)" in out
    assert main(["inspect", "--benchmark", "nope", "--annotations", "x"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err

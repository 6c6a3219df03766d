"""eva-eval end to end: the synthetic benchmark with the tiny model (agent and uniform runs), the
HTML report in headless Chromium, compare, and the run options (limit, items, resume, retries)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from eva_eval.cli import main
from eva_eval.results import RESULTS_FILE, read_run
from eva_eval.runs import SUMMARY_FILE
from eval_bench import make_bench, oracle_script

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    """12 items on 3 short generated videos of eva-data's synthetic benchmark."""
    from eva_data.synth.benchmark import write_benchmark
    from eva_data.synth.config import SynthConfig

    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(duration=(20.0, 24.0), width=224, height=168, key_events=(2, 2), distractor_events=(1, 1),
                         event_length=(2.0, 3.0), min_gap=1.0, questions_per_video=4)
    write_benchmark(root, n=3, seed=7, config=config)
    return root


@pytest.fixture(scope="module")
def tiny_runs(synth_dir, tiny_model_dir, tmp_path_factory):
    """An agent run and a uniform run of the tiny model on the synthetic benchmark."""
    runs = tmp_path_factory.mktemp("runs")
    common = ["run", "--benchmark", "synthetic", "--annotations", str(synth_dir / "annotations.jsonl"),
              "--model", str(tiny_model_dir), "--max-new-tokens", "8", "--batch-size", "6", "--no-progress"]
    assert main([*common, "--mode", "agent", "--out", str(runs / "agent")]) == 0
    assert main([*common, "--mode", "uniform", "--frames", "4", "--short-side", "56", "--out",
                 str(runs / "uniform")]) == 0
    return runs


def test_tiny_model_runs_finish_with_every_item_accounted(tiny_runs):
    info, agent = read_run(tiny_runs / "agent")
    assert info["benchmark"] == "synthetic" and info["mode"] == "agent"
    assert sorted(int(r.id) for r in agent) == list(range(12))
    assert all(r.status == "ok" and r.rounds >= 1 and r.total_tokens > 0 for r in agent)
    assert all(r.stop_reason in ("answer_found", "no_answer_no_tool_call", "no_valid_tool_call",
                                 "tool_error:invalid_arguments", "max_turns_exceeded") for r in agent)
    _, uniform = read_run(tiny_runs / "uniform")
    assert len(uniform) == 12
    for r in uniform:
        # 4 frames at a 56 px short side: 224x168 -> 74.67x56 -> 84x56 (multiples of 28) -> 3*2 tokens
        assert r.rounds == 1 and r.frames == 4 and r.visual_tokens == 4 * 6
        assert r.views[0]["frame_size"] == [56, 84] and r.views[0]["labels"][0] == "00:00"
    summary = json.loads((tiny_runs / "uniform" / SUMMARY_FILE).read_text())
    assert summary["items"] == 12 and summary["mean_frames"] == 4.0


def test_identical_runs_compare_clean(tiny_runs, capsys):
    assert main(["compare", str(tiny_runs), str(tiny_runs)]) == 0
    out = capsys.readouterr().out
    assert "synthetic        agent" in out and "synthetic        uniform" in out and "REGRESSION" not in out
    # an agent run against a uniform run of the same items: paired only across modes
    assert main(["compare", str(tiny_runs / "uniform"), str(tiny_runs / "agent")]) == 2
    assert main(["compare", str(tiny_runs / "uniform"), str(tiny_runs / "agent"), "--across-modes"]) in (0, 1)
    out = capsys.readouterr().out
    assert "uniform>agent" in out and "    12 " in out  # the 12 shared items


def test_report_renders_in_headless_chromium(tiny_runs, tmp_path):
    assert main(["report", str(tiny_runs), "--html", str(tmp_path / "report.html")]) == 0
    html = (tmp_path / "report.html").read_text()
    assert html.count('<details class="item') == 24 and 'id="acc-plot"' in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    dom = _dump_dom(tmp_path / "report.html", tmp_path)
    assert 'data-ready="1"' in dom  # the page's script ran to its end
    assert dom.count('class="point"') == 2 and dom.count('class="thumb"') > 0
    assert "24 shown" in dom


def _dump_dom(page, tmp_path) -> str:
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def bench(tmp_path):
    return make_bench(tmp_path / "bench", videos=2, per_video=4)  # 8 items + a missing and a corrupt video


def test_compare_flags_an_injected_regression(bench, tmp_path, capsys):
    good = oracle_script(bench, tmp_path / "good.json")
    bad = oracle_script(bench, tmp_path / "bad.json", wrong={"0", "2", "3", "5", "6", "7"})
    base = ["run", "--benchmark", "videomme", "--annotations", str(bench), "--no-progress"]
    assert main([*base, "--model", f"scripted:{good}", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--model", f"scripted:{bad}", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    # 8 items right in A; B gets 6 of them wrong: b = 6, c = 0, p = 2 * 0.5**6 = 0.03125; the 2
    # error records are wrong in both. Accuracy 80 % -> 20 % of 10 items: delta -60 points.
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "-60.00" in out and "0.0312" in out and "REGRESSION" in out
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "a")]) == 0  # an improvement passes
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--tolerance", "70"]) == 0
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a")]) == 0


def test_limit_items_resume_retry_errors_and_mismatch(bench, tmp_path, capsys):
    script = oracle_script(bench, tmp_path / "s.json")
    out = tmp_path / "run"
    base = ["run", "--benchmark", "videomme", "--annotations", str(bench), "--model", f"scripted:{script}",
            "--out", str(out), "--no-progress"]
    assert main([*base, "--limit", "3"]) == 0
    assert [r.id for r in read_run(out)[1]] == ["0", "1", "2"]
    assert main([*base, "--items", "9,5"]) == 0
    assert sorted(r.id for r in read_run(out)[1]) == ["0", "1", "2", "5", "9"]
    assert "ran 2 items" in capsys.readouterr().out
    assert main(base) == 0  # resume: the rest, including the missing and the corrupt video
    records = {r.id: r for r in read_run(out)[1]}
    assert len(records) == 10 and "ran 5 items (1 errors), 5 already done" in capsys.readouterr().out
    assert records["8"].error_kind == "unresolved_video:not_found" and records["9"].error_kind == "corrupt_video"
    assert all(r.correct for i, r in records.items() if i not in ("8", "9"))
    shutil.copy(bench.parent / "vid0.mp4", bench.parent / "gone.mp4")  # the user fetches the missing video
    assert main([*base, "--retry-errors"]) == 0
    records = {r.id: r for r in read_run(out)[1]}
    assert len(records) == 10 and records["8"].status == "ok" and records["8"].correct
    assert records["9"].status == "error"
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == 10  # the retried error record was replaced, not duplicated
    capsys.readouterr()
    assert main([*base[:-3], "--mode", "uniform", "--out", str(out), "--no-progress"]) == 2
    assert "holds another run (differs in mode" in capsys.readouterr().err
    assert main([*base, "--items", "99"]) == 2


def test_model_text_is_escaped_in_the_report(bench, tmp_path):
    reply = '<script>document.title="pwned"</script><img src=x onerror="alert(1)"> <answer>A</answer>'
    script = tmp_path / "evil.json"
    script.write_text(json.dumps([reply]))
    out = tmp_path / "runs" / "evil"
    assert main(["run", "--benchmark", "videomme", "--annotations", str(bench), "--model", f"scripted:{script}",
                 "--mode", "uniform", "--frames", "2", "--limit", "2", "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in html
    assert "<script>document.title" not in html and '<img src=x onerror' not in html
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    dom = _dump_dom(out / "report.html", tmp_path)
    assert "<title>eva-eval report</title>" in dom  # the injected script did not run
    assert re.search(r"<img[^>]*onerror", dom) is None  # and no element got the handler
    assert dom.count("&lt;script&gt;document.title") == 2  # it shows as text, once per item


def test_elv_halluc_run_reports_sah(tmp_path, capsys):
    from eva_core.sample_video import write_sample_video

    write_sample_video(tmp_path / "v.mp4", duration=3.0, fps=10, width=112, height=84, gop=10)
    kinds = ["ground_truth", "in_video", "out_video"]
    records, script = [], {}
    # Two triplets. Triplet 0: all right (in 1, out 1). Triplet 1: the in-video hallucination is
    # accepted (in 0) while the out-of-video one is rejected (out 1): in_acc 50 %, out_acc 100 %,
    # SAH = (1 - 0.5) / (1 - 0.5) = 100 %.
    replies = ["Yes", "No", "No", "Yes", "Yes", "No"]
    for i in range(6):
        kind = kinds[i % 3]
        records.append({"videos": ["v.mp4"], "prompt": [{"role": "user", "content": f"A caption {i}."}],
                        "index": i, "caption_type": kind, "aspect": "objects", "part_nums": 1,
                        "ref_answer": "Yes" if kind == "ground_truth" else "No"})
        script[f"elv_halluc/{i}"] = [f"<answer>{replies[i]}</answer>"]
    (tmp_path / "elv.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "s.json").write_text(json.dumps(script))
    assert main(["run", "--benchmark", "elv-halluc", "--annotations", str(tmp_path / "elv.jsonl"),
                 "--model", f"scripted:{tmp_path / 's.json'}", "--mode", "uniform", "--frames", "2",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())
    assert summary["extra"]["in_acc"] == 50.0 and summary["extra"]["out_acc"] == 100.0
    assert summary["extra"]["sah"] == 100.0 and summary["accuracy"] == pytest.approx(500 / 6)
    assert "SAH 100.0 (in 50.0 / out 100.0, 2 triplets)" in capsys.readouterr().out


def test_resume_compares_resolved_model_paths_and_refuses_before_loading(bench, tmp_path, monkeypatch, capsys):
    import eva_eval.cli as cli

    oracle_script(bench, tmp_path / "s.json")
    monkeypatch.chdir(tmp_path)
    base = ["run", "--benchmark", "videomme", "--annotations", str(bench), "--out", str(tmp_path / "run"),
            "--no-progress"]
    assert main([*base, "--model", "scripted:s.json", "--limit", "2"]) == 0
    assert main([*base, "--model", f"scripted:{tmp_path / 's.json'}", "--limit", "4"]) == 0  # the same model
    assert "ran 2 items" in capsys.readouterr().out
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("loaded a model for a refused run"))
    assert main([*base, "--model", "scripted:s.json", "--mode", "uniform"]) == 2
    assert "differs in mode" in capsys.readouterr().err


def test_a_run_where_no_video_resolves_is_refused_early(bench, tmp_path, monkeypatch, capsys):
    import eva_eval.cli as cli

    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("loaded a model for a refused run"))
    (tmp_path / "empty").mkdir()
    code = main(["run", "--benchmark", "videomme", "--annotations", str(bench), "--video-root",
                 str(tmp_path / "empty"), "--model", "scripted:x.json", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("eva-eval: no video of the 10 items resolves under")
    assert not (tmp_path / "run").exists()

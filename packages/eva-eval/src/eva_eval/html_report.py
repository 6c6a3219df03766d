"""The self-contained HTML report: summary, accuracy-vs-visual-tokens plot, per-item viewer.

One file, no network: CSS, a few lines of JavaScript (filters only) and SVG are inline, frames
are small JPEG data URLs decoded again from the recorded frame times (`thumbnails`). All the
page's HTML is rendered here, in Python; every string that a model wrote or an annotation held
goes through `html.escape`, so a reply such as `<script>...</script>` shows as text and runs
nothing. The script only filters elements already on the page.

Size: the viewer holds at most `max_items` items per run and thumbnails for the first
`thumb_items` of them (a 2,700-item run would otherwise make a page of tens of megabytes); the
page says how many were left out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape
from pathlib import Path

from eva_eval.results import ResultRecord
from eva_eval.runs import Run
from eva_eval.svg import PlotPoint, accuracy_plot, timeline
from eva_eval.tables import COLUMNS, published_by_category, row_cells, summary_rows
from eva_eval.thumbnails import record_thumbnails

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child,#summary td:nth-child(-n+3),#summary th:nth-child(-n+3){text-align:left}
th{background:#f0f0f0}
.paper{color:#777}.item{border:1px solid #ddd;border-radius:4px;margin:4px 0;padding:2px 8px}
.item>summary{cursor:pointer}.right>summary .mark{color:#1a7f37}.wrong>summary .mark{color:#c62828}
.error>summary .mark{color:#b26a00}.turn{margin:6px 0}.role{font-weight:600;font-size:12px;color:#555}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:6px;margin:2px 0;font-size:12px}
.assistant pre{background:#eef4ff}.tool pre{background:#f4f4f4}.meta{color:#666;font-size:12px}
.strip img{height:56px;margin-right:3px;border:1px solid #ccc}.controls{margin:8px 0}
.controls select,.controls input{margin-right:12px}.hidden{display:none}
"""

SCRIPT = """
(function(){
  const run=document.getElementById('run-filter'),status=document.getElementById('status-filter'),
        search=document.getElementById('search'),items=[...document.querySelectorAll('details.item')],
        count=document.getElementById('shown-count');
  function apply(){
    const q=search.value.toLowerCase();let n=0;
    for(const el of items){
      const ok=(run.value==='all'||el.dataset.run===run.value)&&(status.value==='all'||el.dataset.status===status.value)
        &&(!q||el.textContent.toLowerCase().includes(q));
      el.classList.toggle('hidden',!ok);if(ok)n++;
    }
    count.textContent=n+' shown';
  }
  run.addEventListener('change',apply);status.addEventListener('change',apply);search.addEventListener('input',apply);
  apply();document.body.dataset.ready='1';
})();
"""


def _sort_key(record: ResultRecord) -> tuple:
    return (0, int(record.id), "") if record.id.isdigit() else (1, 0, record.id)


def _turns(record: ResultRecord) -> list[tuple[str, str, int | None]]:
    """(role, text, assistant turn index or None) of the record's episode, in order."""
    episode = record.episode or {}
    out: list[tuple[str, str, int | None]] = [(t["role"], t["text"], None) for t in episode.get("prompt", [])]
    for k, step in enumerate(episode.get("steps", [])):
        out.append(("assistant", step.get("reply", ""), k))
        if step.get("tool_text") is not None:
            out.append(("tool", step["tool_text"], k))
    return out


def item_html(record: ResultRecord, run_index: int, run_label: str, thumbs: list[list[str] | None] | None,
              *, open_: bool = False) -> str:
    """One `<details>` element of the viewer (unfolded when `open_`)."""
    status = "error" if record.status == "error" else ("right" if record.correct else "wrong")
    mark = {"right": "&#10003;", "wrong": "&#10007;", "error": "!"}[status]
    episode = record.episode or {}
    question = str(episode.get("question") or "").strip().split("\n")[0][:160]
    answer = "-" if record.answer is None else record.answer
    head = (f'<summary><span class="mark">{mark}</span> <b>{escape(record.id)}</b> '
            f'<span class="meta">[{escape(run_label)}]</span> answer <code>{escape(answer[:80])}</code> / '
            f'truth <code>{escape(record.ground_truth[:80])}</code> &middot; {record.rounds} rounds &middot; '
            f'{record.total_tokens} tokens &middot; {record.frames} frames &middot; '
            f'{escape(record.stop_reason or str(record.error_kind))} &middot; {escape(question)}</summary>')
    body = []
    if record.status == "error":
        body.append(f'<p class="meta">error: {escape(record.error or "")}</p>')
    if record.views and record.duration:
        body.append(timeline(record.duration, record.views, thumbs or [None] * len(record.views)))
    for role, text, turn in _turns(record):
        strips = ""
        if role == "tool" and thumbs:
            imgs = [f'<img src="{u}" alt="frame {escape(label)}" title="{escape(label)}">'
                    for v, urls in zip(record.views, thumbs, strict=True) if v.get("turn") == turn and urls
                    for u, label in zip(urls, v.get("labels", []), strict=False)]
            strips = f'<div class="strip">{"".join(imgs)}</div>' if imgs else ""
        title = role if turn is None else f"{role} (turn {turn + 1})"
        body.append(f'<div class="turn {escape(role)}"><div class="role">{escape(title)}</div>'
                    f'<pre>{escape(text)}</pre>{strips}</div>')
    return (f'<details class="item {status}" data-run="{run_index}" data-status="{status}"'
            f'{" open" if open_ else ""}>{head}'
            f'{"".join(body)}</details>')


def _run_section(k: int, run: Run, summary) -> str:
    published = published_by_category(run.benchmark.name)
    rows = "".join(f"<tr><td>{escape(c)}</td><td>{acc:.2f}</td><td>{n}</td>"
                   f"<td>{format(published[c], '.2f') if c in published else '-'}</td></tr>"
                   for c, (acc, n) in summary.by_category.items())
    cats = (f'<table class="cats"><tr><th>category</th><th>acc %</th><th>items</th><th>paper %</th></tr>{rows}</table>'
            if rows else "")
    stops = ", ".join(f"{escape(s)} {n}" for s, n in summary.stop_reasons.items())
    t = summary.time
    extra = ""
    if "by_aspect" in summary.extra:
        aspects = "".join(
            f"<tr><td>{escape(a)}</td><td>{s['in_acc']:.2f}</td><td>{s['out_acc']:.2f}</td>"
            f"<td>{'n/a' if s['sah'] is None else format(s['sah'], '.2f')}</td><td>{s['triplets']}</td></tr>"
            for a, s in summary.extra["by_aspect"].items())
        extra = ('<table class="aspects"><tr><th>aspect</th><th>in acc %</th><th>out acc %</th><th>SAH %</th>'
                 f"<th>triplets</th></tr>{aspects}</table>")
    return (f'<section class="run" id="run-{k}"><h3>{escape(run.label)}</h3>'
            f'<p class="meta">{escape(run.benchmark.title)} &middot; model {escape(str(run.info.get("model")))} '
            f'&middot; annotations {escape(str(run.info.get("annotations")))}</p>'
            f"<p>stop reasons: {stops}</p><p>time summed over items: model {t.model:.1f} s, tool {t.tool:.1f} s, "
            f"other {t.other:.1f} s</p>{cats}{extra}</section>")


def render_report(runs: Sequence[Run], *, max_items: int = 200, thumb_items: int = 40) -> str:
    """The whole page as a string."""
    rows = summary_rows(runs)
    # A benchmark scored by another metric than accuracy (ELV-Halluc's SAH) has it in `headline`;
    # the column exists only when a run has one (it was always there, and empty otherwise).
    own_metric = any(row.headline for row, _ in rows)
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS) + ("<th>benchmark metric</th>" if own_metric else "")
    body_rows = []
    for row, _ in rows:
        cells = row_cells(row)
        tds = "".join(f'<td class="{"paper" if COLUMNS[i] == "paper" or COLUMNS[i] == "paper %" else ""}">'
                      f"{escape(c)}</td>" for i, c in enumerate(cells))
        metric = f"<td>{escape(row.headline)}</td>" if own_metric else ""
        body_rows.append(f"<tr>{tds}{metric}</tr>")
    points = [PlotPoint(label=run.path.name, mode=row.mode, visual_tokens=row.visual_tokens, accuracy=row.accuracy)
              for run, (row, _) in zip(runs, rows, strict=True)]
    sections = "".join(_run_section(k, run, s) for k, (run, (_, s)) in enumerate(zip(runs, rows, strict=True)))
    items, notes = [], []
    for k, run in enumerate(runs):
        records = sorted(run.records, key=_sort_key)
        for j, record in enumerate(records[:max_items]):
            thumbs = record_thumbnails(record.video, record.views) if j < thumb_items else None
            items.append(item_html(record, k, run.path.name, thumbs, open_=j == 0))
        if len(records) > max_items:
            notes.append(f"{escape(run.path.name)}: {len(records) - max_items} more items not shown")
    options = "".join(f'<option value="{k}">{escape(run.label)}</option>' for k, run in enumerate(runs))
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>eva-eval report</title><style>{CSS}</style></head><body data-ready=\"0\">"
        f"<h1>eva-eval report</h1><p class=\"meta\">{len(runs)} runs &middot; generated {generated} &middot; "
        "paper figures: EVA, 12k visual-token budget per call</p>"
        f'<h2>Summary</h2><table id="summary"><tr>{head}</tr>{"".join(body_rows)}</table>'
        f"<h2>Accuracy versus visual tokens</h2>{accuracy_plot(points)}"
        f"<h2>Runs</h2>{sections}"
        '<h2>Items</h2><div class="controls"><select id="run-filter"><option value="all">all runs</option>'
        f"{options}</select><select id=\"status-filter\"><option value=\"all\">all</option>"
        '<option value="right">right</option><option value="wrong">wrong</option><option value="error">errors'
        '</option></select><input id="search" type="search" placeholder="search text"> '
        f'<span id="shown-count" class="meta"></span></div><p class="meta">{"; ".join(notes)}</p>'
        f'<div id="items">{"".join(items)}</div><script>{SCRIPT}</script></body></html>'
    )


def write_report(runs: Sequence[Run], out: Path | str, **kwargs) -> Path:
    """Render the report into `out` (a file path) and return it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(runs, **kwargs), encoding="utf-8")
    return out

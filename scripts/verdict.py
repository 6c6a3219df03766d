"""The quickstart's verdict: did the SFT agent learn? Reads the evaluation runs' `summary.json`.

    uv run python scripts/verdict.py runs/quickstart/eval

Prints, per run (agent and uniform mode): accuracy against chance with the one-sided exact
p-value, the rate of episodes that answered after a valid `frame_select` call, mean rounds and
visual tokens; then the report's path and the next commands. Exits 0 whatever the figures
(the quickstart shows them; `tests/test_quickstart.py` asserts them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LEARNED_AT = 15.0  # the quickstart's bar: points above chance (docs/train.md, "The embedded default")
ANSWERED_AT = 90.0  # percent of episodes answering after a valid tool call


def run_line(name: str, s: dict) -> str:
    chance, p = s.get("chance"), s.get("p_above_chance")
    odds = "" if chance is None else (f" (chance {chance:.1f} %, {s['accuracy'] - chance:+.1f} points, "
                                      f"one-sided exact p = {p:.2g})")
    tool = s.get("answered_after_tool_call")
    tool_text = "" if tool is None else f"; answered after a valid tool call in {tool:.0f} % of episodes"
    return (f"  {name:<8} accuracy {s['accuracy']:.1f} % on {s['items']} items{odds}{tool_text}; "
            f"{s['mean_rounds']:.2f} rounds, {s['mean_visual_tokens']:.0f} visual tokens per item")


def learned(s: dict) -> bool:
    """The quickstart's bar: answers after a valid tool call, and clearly above chance."""
    return (s.get("answered_after_tool_call") or 0.0) >= ANSWERED_AT and s.get("chance") is not None and \
        s["accuracy"] - s["chance"] >= LEARNED_AT and s["p_above_chance"] < 0.01


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "runs/quickstart/eval")
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/summary.json"))}
    if not summaries:
        print(f"verdict: no evaluation runs under {root}", file=sys.stderr)
        return 2
    print("== verdict (held-out items; the seed of the benchmark was never trained on)")
    for name, s in summaries.items():
        print(run_line(name, s))
    if "agent" in summaries:
        ok = learned(summaries["agent"])
        print(f"  the agent {'learned' if ok else 'did NOT learn'} the task by the quickstart's bar "
              f"(>= {ANSWERED_AT:.0f} % answered after a tool call, >= {LEARNED_AT:.0f} points above chance, p < 0.01)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

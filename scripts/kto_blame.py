"""Where an `eva-data build kto --credit` build blames its undesirables, by named window.

    uv run python scripts/kto_blame.py OUT/kto-data

For each undesirable with a credit: its label, how it was credited (a success on its item, or its
turn at fault), the named 20 s window of its item, and where the blame begins: in the first
reply's plan text, the call's start or end time (with the character blamed), or a later reply
(the answer turn). Counted, most frequent first per window.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

from eva_data.records.records import KtoTrajectory
from eva_data.shards.stream import ShardStream

WINDOW = 20.0  # the seek-hint preset's window grid


def place(record: KtoTrajectory) -> str:
    """Where the record's blame begins: "answer turn", "plan text", "start 'c'" or "end 'c'"."""
    if record.credit.turn > 0:
        return "answer turn"
    reply, char = record.episode.steps[0].reply, record.credit.char
    start, end = reply.find('"start_time": '), reply.find('"end_time"')
    if start < 0 or char < start + len('"start_time": '):
        return "plan text"
    return f"{'start' if end < 0 or char < end else 'end'} {reply[char]!r}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("shards", help="the build's output folder")
    args = p.parse_args(argv)
    counts: Counter = Counter()
    for sample in ShardStream(args.shards, shuffle_shards=False):
        items = {str(i["index"]): i for i in sample.items}
        for data in sample.trajectories:
            r = KtoTrajectory.from_dict(data)
            if r.desirable or r.credit is None:
                continue
            window = int(items[str(r.item_index)]["evidence"][0][0] // WINDOW * WINDOW)
            first = re.search(r'"start_time": ([\d.]+)', r.episode.steps[0].reply)
            counts[(f"{window // 60:02d}:{window % 60:02d}", r.meta["judge"]["label"], r.meta.get("credit", "-"),
                    place(r), first.group(1) if first else "-")] += 1
    print("| named window | label | credited by | blame begins at | first call's start | undesirables |")
    print("| --- | --- | --- | --- | --- | ---: |")
    for (window, label, by, where, start), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
        print(f"| {window} | {label} | {by} | {where} | {start} | {n} |")
    by_place = Counter()
    for (_, label, _, where, _), n in counts.items():
        by_place[(label, where.split()[0] if where.startswith(("start", "end")) else where)] += n
    print("\n" + ", ".join(f"{label} in {where}: {n}" for (label, where), n in sorted(by_place.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Python examples in docs/*.md run.

Every fenced block whose info string starts with `python` is executed in a fresh interpreter
in an empty folder; a block that cannot run alone says so in its info string
(`python no-run (why)`), and the test checks that it gives the reason rather than skipping it
silently.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```(python[^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[str, str, str]]:
    """(doc:line, info string, code) for each python block of docs/*.md."""
    blocks = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{doc.name}:{line}", match.group(1).strip(), match.group(2)))
    return blocks


BLOCKS = python_blocks()


def test_the_docs_hold_runnable_examples():
    assert any(info == "python" for _, info, _ in BLOCKS)


@pytest.mark.parametrize(("where", "info", "code"), BLOCKS, ids=[w for w, _, _ in BLOCKS])
def test_doc_example_runs(where, info, code, tmp_path):
    if info != "python":
        assert re.fullmatch(r"python no-run \(.+\)", info), f"{where}: mark a block that cannot run as `python no-run (why)`"
        return
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{where}:\n{result.stderr[-3000:]}"

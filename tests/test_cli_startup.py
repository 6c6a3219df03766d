"""The command lines answer `--help` without importing torch or Lightning (issue 17 measured
9-14 s per `--help` when everything was imported before the parser ran)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import contextlib, io, sys
from {module} import {function} as main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    main({argv!r})
heavy = sorted(m for m in ("torch", "lightning", "torchcodec", "transformers") if m in sys.modules)
print(repr((out.getvalue(), heavy)))
"""


def _help(module: str, function: str, argv: list[str]) -> tuple[str, list[str]]:
    code = PROBE.format(module=module, function=function, argv=argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr


@pytest.mark.parametrize(("module", "function", "argv", "expect"), [
    ("eva_train.cli", "main", ["--help"], "export"),
    ("eva_train.cli", "main", ["export", "--help"], "--adapter-only"),
    ("eva_core.cli", "frames_main", ["--help"], "--budget"),
    ("eva_data.cli", "main", ["synth", "--help"], "--difficulty"),
])
def test_help_imports_no_heavy_library(module, function, argv, expect):
    text, heavy = _help(module, function, argv)
    assert expect in text
    assert heavy == []

"""Job processes of one test run side by side: a 2-rank FSDP2 job and its 1-process reference.

On a 2-core machine the two ranks leave a core idle while they wait on each other's gathers,
so the reference costs little wall time beside them. Each process gets one OpenMP thread and
none of the launcher variables of an enclosing distributed run; its stderr goes to
`<logs>/<name>.stderr` (a pipe read after another process ends could fill and stall it).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")


def run_side_by_side(commands: dict[str, list[str]], logs: Path, *, timeout: float = 600.0) -> None:
    """Start every command at once and wait for all; fails with the stderr tail of each that
    failed, or when they are not all done within `timeout` seconds (then every one is killed)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES} | {"OMP_NUM_THREADS": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.stderr", "w") as err:
                procs[name] = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        for proc in procs.values():
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    failed = {name: (logs / f"{name}.stderr").read_text()[-4000:] for name, p in procs.items() if p.returncode}
    assert not failed, failed

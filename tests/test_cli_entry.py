"""The installed `tunesmith` console script: exit codes and output survive its fast exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "tunesmith"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_ROOT"}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_console_script_keeps_exit_codes_and_output(project: Path):
    ok = _run(["step", "ingest", "--dataset", "toy"], project)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (project / "data" / "raw" / "toy" / "manifest.json").is_file()
    listed = _run(["dataset", "list"], project)
    assert listed.returncode == 0 and "toy" in listed.stdout
    bad = _run(["step", "clean", "--dataset", "nope"], project)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "nope" in bad.stderr
    usage = _run(["run", "--no-such-option"], project)
    assert usage.returncode == 2 and "No such option" in usage.stderr

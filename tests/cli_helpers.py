"""Run the real `tunesmith` CLI in-process and capture its exit code and output."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture) -> CliResult:
    from tunesmith.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TUNESMITH_ROOT", raising=False)
    monkeypatch.setattr(sys, "argv", ["tunesmith", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)

"""Browse the default `mlflow ui` of a tunesmith project in headless Chromium.

Starts `mlflow ui` exactly as a user would (in the project root, no arguments but a port),
opens the registered model page of a dataset and checks that it renders the `champion`
alias; also opens the experiment page. Exit 0 when every check passes.

    python scripts/check_mlflow_ui.py [--root DIR] [--dataset NAME] [--screenshot out.png]

Needs Debian's chromium (`apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(1)


def chromium(url: str, *, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """The DOM of `url` after `budget_ms` of virtual time (the SPA fetches and renders)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("chromium not found: apt-get install -y chromium chromium-driver")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}"]
        if screenshot is not None:
            out = subprocess.run([*args, f"--screenshot={screenshot}", url],
                                 capture_output=True, text=True, timeout=180)
            if out.returncode != 0:
                raise RuntimeError(f"chromium --screenshot failed: {out.stderr[-500:]}")
        out = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True,
                             timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom failed: {out.stderr[-500:]}")
    return out.stdout


def check(root: Path, dataset: str, screenshot: Path | None = None) -> list[str]:
    """Start `mlflow ui` in `root`, return the failed checks (empty: all passed)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--port", str(port), "--host", "127.0.0.1"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so we stop its workers too
    )
    base = f"http://127.0.0.1:{port}"
    failures = []
    try:
        wait_http(f"{base}/health")
        model_dom = chromium(f"{base}/#/models/{dataset}", screenshot=screenshot)
        if dataset not in model_dom:
            failures.append(f"model page: registered model {dataset!r} not shown")
        for alias in ("champion", "challenger"):
            # The versions table renders each alias as a tag "@ alias" (nbsp after the @).
            if not re.search(rf"@(&nbsp;|\s|\xa0){alias}<", model_dom):
                failures.append(f"model page: alias tag '@ {alias}' not shown")
        exp_dom = chromium(f"{base}/#/experiments")
        if dataset not in exp_dom:
            failures.append(f"experiments page: experiment {dataset!r} not listed")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root")
    parser.add_argument("--dataset", default="sms_spam", help="registered model name")
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the model page")
    args = parser.parse_args()
    if not (args.root / "mlflow.db").is_file():
        print(f"{args.root / 'mlflow.db'}: no tracking store; run the pipeline first")
        return 2
    failures = check(args.root.resolve(), args.dataset, args.screenshot)
    for line in failures:
        print(f"FAIL {line}")
    if not failures:
        print(f"ok: mlflow ui shows registered model {args.dataset!r} with alias 'champion'")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

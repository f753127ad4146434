"""Browse a real Prefect server's flow-run page of a retrain in headless Chromium.

Starts `prefect server start` (its own PREFECT_HOME in a temp folder, the UI on), runs
`tunesmith run --dataset NAME` against it as a scheduled retrain would, then checks:
  - the flow run's graph edges: each step's task run waits for the step before
    (Prefect draws the graph from these; without them ingest..tokenize sat side by side);
  - the validation, metrics and gate artifacts render on their pages (/artifacts/artifact/ID).
`--screenshot` saves the flow-run page (its graph and timeline).
Exit 0 when every check passes. Needs Debian's chromium (`apt-get install -y chromium`).

    python scripts/check_prefect_ui.py --root DIR --dataset NAME [--set KEY=VALUE ...]
                                       [--screenshot out.png]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

# This script's folder is on sys.path when it runs: the same Chromium and HTTP helpers.
from check_mlflow_ui import chromium, free_port, wait_http

STEPS = ("ingest", "clean", "validate", "tokenize", "train", "evaluate", "register")
# flows/artifacts.py: what each artifact's rendered page must show.
ARTIFACTS = {"validation": "Validation of", "metrics": "f1_macro", "gate": "Gate decision for"}


def artifact_key(dataset: str, kind: str) -> str:
    """As flows/artifacts.py names them (keys allow lowercase letters, digits, dashes)."""
    return f"{dataset}-{kind}".lower().replace("_", "-")


def api(base: str, path: str, body: dict) -> list | dict:
    request = urllib.request.Request(f"{base}/api/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def graph_failures(base: str, flow_run_id: str) -> list[str]:
    """The steps whose task run does not wait for the step before (the graph's edges)."""
    runs = api(base, "task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    by_step = {r["name"].split("-")[0]: r for r in runs}
    failures = [f"graph: no task run for {s}" for s in STEPS if s not in by_step]
    for before, after in zip(STEPS, STEPS[1:], strict=False):
        if before in by_step and after in by_step:
            waits = {i["id"] for i in by_step[after]["task_inputs"].get("wait_for", [])}
            if waits != {by_step[before]["id"]}:
                failures.append(f"graph: {after} does not wait for {before}")
    return failures


def check(root: Path, dataset: str, sets: list[str], screenshot: Path | None,
          dom_out: Path | None = None) -> list[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="prefect-ui-") as home:
        # The UI calls the API at PREFECT_UI_API_URL, which otherwise defaults to port 4200.
        env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": f"{base}/api"}
        env.pop("PREFECT_API_URL", None)
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
             "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_http(f"{base}/api/health", timeout=180)
            args = [a for s in sets for a in ("--set", s)]
            run = subprocess.run([str(Path(sys.executable).with_name("tunesmith")), "run",
                                  "--dataset", dataset, *args], cwd=root,
                                 env={**env, "PREFECT_API_URL": f"{base}/api"},
                                 capture_output=True, text=True, timeout=3600)
            if run.returncode != 0:
                return [f"tunesmith run exited {run.returncode}: {run.stderr[-500:]}"]
            flow_run = api(base, "flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})[0]
            failures = graph_failures(base, flow_run["id"])
            page = f"{base}/runs/flow-run/{flow_run['id']}"
            if screenshot is not None:
                chromium(page, screenshot=screenshot)
            # Each artifact's own page renders it (markdown, table): this run's version.
            for kind, expected in ARTIFACTS.items():
                key = artifact_key(dataset, kind)
                found = api(base, "artifacts/filter", {
                    "artifacts": {"key": {"any_": [key]},
                                  "flow_run_id": {"any_": [flow_run["id"]]}}, "limit": 1})
                if not found:
                    failures.append(f"artifact {key}: not created by this flow run")
                    continue
                dom = chromium(f"{base}/artifacts/artifact/{found[0]['id']}")
                if dom_out is not None:
                    dom_out.with_name(f"{dom_out.stem}-{kind}{dom_out.suffix}").write_text(dom)
                if expected not in dom:
                    failures.append(f"artifact page {key}: {expected!r} not rendered")
            return failures
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root")
    parser.add_argument("--dataset", default="sms_spam")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="a --set override for the run, e.g. train.max_steps=5")
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the flow-run page")
    parser.add_argument("--dom", type=Path,
                        help="save each artifact page's HTML (NAME-<kind>.html beside it)")
    args = parser.parse_args()
    failures = check(args.root.resolve(), args.dataset, args.sets, args.screenshot, args.dom)
    for line in failures:
        print(f"FAIL {line}")
    if not failures:
        print(f"ok: the flow run of {args.dataset!r} shows its steps in order and its "
              "validation, metrics and gate artifacts")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Defaults for running Prefect embedded: project-local home, quiet, no telemetry."""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tunesmith.errors import EnvironmentProblem


def configure(root: Path) -> None:
    """Set Prefect's environment before it is imported; explicit user settings win.

    Without PREFECT_API_URL, Prefect runs an ephemeral API on SQLite under `.prefect/`.
    """
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    # The 20 s default timed out on a loaded 2-core machine (bench/noop_rerun.py).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def start_local_api(startup_timeout_s: float | None = None, *,
                    own_session: bool = False) -> str | None:
    """Start a temporary Prefect API for this process, unless PREFECT_API_URL is set.

    Prefect would start the same server itself (`SubprocessASGIServer`: uvicorn running
    `prefect.server.api.server:create_app`, UI off) on the flow's first API call, but only
    after importing that whole server app into this process too (~3 s) and with nothing
    else to do while it boots (~5 s more). Started here, before `prefect` is imported, the
    server boots while this process imports the flow, and this process never imports the
    server. Returns the API URL (also exported as PREFECT_API_URL), or None if one was set.
    The server is stopped at exit, after Prefect has drained its log and event workers.

    `own_session` (`tunesmith serve`): the server runs in a session of its own, so the
    terminal's Ctrl-C reaches only this process, which then pauses its deployments on a
    server still up (killed outright, this process takes it along: the server exits within
    ~12 s of losing it, tests/test_cli_entry.py). In the terminal's process group,
    Ctrl-C stopped Prefect's server first and serve spent ~4 minutes retrying the pause
    against it, printing tracebacks (2026-12-07).
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem("prefect is not installed (pip install -e .)")
    app_dir = Path(next(iter(spec.submodule_search_locations))).parent
    _LOCAL_API["startup_lock"] = _startup_lock()
    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=own_session,
    )
    atexit.register(_stop, server)  # registered before Prefect's own: runs after them
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url
    print(f"prefect: temporary API on {url} (stopped at exit; set PREFECT_API_URL to use a "
          "server)", file=sys.stderr)
    timeout = startup_timeout_s or float(
        os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
    _LOCAL_API.update(url=url, server=server, timeout=timeout)
    return url


def wait_for_local_api() -> None:
    """Block until the API from `start_local_api` answers /health (a no-op without one)."""
    server = _LOCAL_API.get("server")
    if server is None:
        return
    deadline = time.monotonic() + _LOCAL_API["timeout"]
    while time.monotonic() < deadline:
        if server.poll() is not None:
            err = server.stderr.read().decode(errors="replace").strip().splitlines()
            raise EnvironmentProblem(
                f"Prefect's temporary API server exited with code {server.returncode}: "
                f"{err[-1] if err else 'no output'}")
        try:
            with urllib.request.urlopen(f"{_LOCAL_API['url']}/health", timeout=2) as reply:
                if reply.status == 200:
                    idle_priority(server.pid)
                    _release(_LOCAL_API.pop("startup_lock", None))
                    return
        except OSError:
            time.sleep(0.1)
    raise EnvironmentProblem(
        f"Prefect's temporary API server did not answer within {_LOCAL_API['timeout']:.0f} s "
        "(raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL)")


_LOCAL_API: dict = {}


def _startup_lock() -> Any:
    """Hold PREFECT_HOME's start-up lock (released once the server answers, or at exit).

    Every temporary server of a project migrates the same SQLite database under
    PREFECT_HOME as it boots; three `tunesmith run` started at once (two datasets and a
    repeat) left two of them with "Application startup failed" (exit 3). One boot at a
    time: the others wait a few seconds, then share the migrated database."""
    import fcntl

    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    home.mkdir(parents=True, exist_ok=True)
    handle = (home / "tunesmith-startup.lock").open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _release(handle: Any) -> None:
    if handle is not None:
        handle.close()  # closing the file releases the flock


def idle_priority(pid: int) -> None:
    """Move every thread of the running API server `pid` to SCHED_IDLE: it then gets a core
    only when no normal task wants one.

    It uses ~1% CPU while a flow trains, but wakes ~120 times a second (event loop, its
    worker threads), and each wakeup preempted one of torch's two threads: the other then
    spins at the OpenMP barrier. Training inside the flow ran 5-15% slower than alone on
    2 cores. An idle-class task gets a sliver (~0.3%) under full load, enough to answer a
    request between training steps. It does not close the whole gap: see
    docs/benchmarks.md section 3. Only once it has booted: started idle, its ~5
    CPU-seconds of start-up at ~0.3% of a core missed the 120 s start-up timeout whenever
    other work (another run, a benchmark) kept both cores busy.
    """
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # not Linux
        return
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):  # gone, or not permitted: run as usual
            pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()

"""What the browser tests and the clicking benchmark share: the Chromium they drive, a real
`streamlit run dashboard/app.py` on a free port with its own database, and the waits on the page."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 150_000  # generous: a loaded 2-core CI machine trains slowly; nothing here measures time
START_TIMEOUT_S = 300  # a cold `streamlit run` imports torch, pandas and plotly: minutes on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(folder: Path, url: str, **env_extra: str) -> tuple[subprocess.Popen, str, object]:
    """`streamlit run dashboard/app.py` headless on a free port, on the DB `url`, runs under `folder`/runs,
    its output in `folder`/streamlit.log; returns (process, base URL, log file). See healthy()."""
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_FAULT", "LAB_BACKEND")}
    env.update(LAB_DB_URL=url, LAB_RUNS_DIR=str(folder / "runs"), PYTHONUNBUFFERED="1", **env_extra)
    port = free_port()
    log = open(folder / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "dashboard/app.py",
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}", log


def healthy(base: str, proc: subprocess.Popen, timeout_s: float = START_TIMEOUT_S) -> bool:
    """Wait for the server's health endpoint to answer ok (False if the server died or the time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(base + "/_stcore/health", timeout=5).read() == b"ok":
                return True
        except OSError:
            pass
        time.sleep(0.3)  # the health probe's polling interval, not a wait on the page
    return False


def stop_dashboard(proc: subprocess.Popen, url: str, log) -> None:
    """Stop the runs still active on `url`, then the server's whole process group."""
    from control.launcher import stop_run
    from db import store

    try:
        for run_id in store.active_run_ids(url):
            stop_run(url, run_id)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        log.close()


def settled(page) -> None:
    """Wait until the page's rerun has finished: the script not running and no stale element left. While
    a rerun streams in, Streamlit keeps the previous render's elements beside the new ones, so one
    button's name can match twice (Playwright's strict mode refuses the click) or an old value shows."""
    from playwright.sync_api import expect

    app, stale = _idle_and_stale(page)
    expect(app).to_have_count(1, timeout=TIMEOUT_MS)
    expect(stale).to_have_count(0, timeout=TIMEOUT_MS)


def _idle_and_stale(page):
    """The app element while its script is not running (count 1 when idle), and any element a rerun
    has left marked stale (count 0 when settled)."""
    return (
        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]'),
        page.locator('[data-testid="stElementContainer"][data-stale="true"]'),
    )


def no_exception(page) -> None:
    """A page that raised shows Streamlit's exception box; only a browser sees those on first load."""
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, boxes.first.inner_text()


IDLE_POLLS = 10  # consecutive one-second looks at an idle, unchanged page before a click counts as dropped


def click_until_taken(page, button, taken, what: str) -> None:
    """Click `button` and wait until `taken()` is true (the click had its effect: a run row exists, an
    error is shown, ...). On a heavily loaded machine a click that lands while the page hands one rerun
    over to the next can be dropped: the page then sits idle, as if never clicked. Only when the page has
    stayed idle (script not running, no stale element) through IDLE_POLLS consecutive polls with
    nothing taken is the button clicked once more; a second drop fails the test, saying so."""
    from playwright.sync_api import expect

    idle_app, stale = _idle_and_stale(page)
    for attempt in (1, 2):
        expect(button).to_be_enabled()
        button.click()
        idle = 0
        while idle < IDLE_POLLS:
            if taken():
                return
            idle = idle + 1 if idle_app.count() == 1 and stale.count() == 0 else 0
            page.wait_for_timeout(1000)  # a polling interval; the condition is taken() or a long idle page
        print(f"[browser] {what}: click {attempt} left the page idle with nothing done", flush=True)
    raise AssertionError(f"{what}: two clicks, each left the page idle with nothing done")

"""Screenshots of `lightstore ui` for the README: a demo sweep (tests/ui_sweep.py) is built in a
temporary store, served, and shot in headless Chromium with every request off the local
server refused (the pages must draw from local assets).

Usage: .venv/bin/python tools/ui_screenshots.py [OUT_DIR]     (default: docs/)
Writes ui-stage.png (a stage's runs with their tags, series columns and chart), ui-compare.png
(runs side by side, their loss curves overlaid, a diverged run's NaN steps shaded) and
ui-run.png (a diverged run with its tags, note, a chart per series and lineage graph). Needs
Playwright and Debian's chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from ui_sweep import DIVERGED_LR, make_sweep  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
#: Flags for a headless Chromium on a machine without network or GPU.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",
]


def serve(root: str) -> tuple[subprocess.Popen[str], str]:
    """Start `lightstore ui --port 0` on `root`; return the process and its URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightstore", "--root", root, "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"lightstore ui did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].split()[0].rstrip("/")


def shoot(url: str, made: dict, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    train = made["train"]
    picked = [train[(lr, 1)] for lr in (1e-3, 3e-3, 1e-2, 1e-1)]
    shown = train[(DIVERGED_LR, 1)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith(url) else route.abort()
                ),
            )
            page.goto(f"{url}/stage/train")
            page.wait_for_selector("#chart .main-svg")
            time.sleep(0.5)
            page.screenshot(path=str(out / "ui-stage.png"), full_page=True)
            page.goto(f"{url}/compare?" + "&".join(f"r={quote(r, safe=':')}" for r in picked))
            page.wait_for_selector("#curves .main-svg")
            page.select_option("#curve-name", "loss")
            page.wait_for_function(
                "() => document.getElementById('curves').layout.yaxis.title.text === 'loss'"
            )
            time.sleep(0.5)
            page.screenshot(path=str(out / "ui-compare.png"), full_page=True)
            page.set_viewport_size({"width": 1280, "height": 1300})
            page.goto(f"{url}/run/{quote(shown, safe=':')}")
            page.wait_for_selector("#lineage svg")
            page.wait_for_function("() => document.getElementById('curves').dataset.drawn")
            time.sleep(0.5)
            page.screenshot(path=str(out / "ui-run.png"))
        finally:
            browser.close()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):  # what the demo realizers print
            made = make_sweep(os.path.join(tmp, "store"))
        proc, url = serve(made["root"])
        try:
            shoot(url, made, out)
        finally:
            proc.terminate()
            proc.wait(10)
    for name in ("ui-stage.png", "ui-compare.png", "ui-run.png"):
        print(out / name)


if __name__ == "__main__":
    main()

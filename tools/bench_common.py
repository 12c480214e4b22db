"""Helpers shared by the benchmark driver and the workload runners (standard library only).

The workload runners execute in the interpreter of the library they measure
(lightstore's project venv, or Pylightnix's scratch venv), so this module
must not import either library.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB


def log(*parts: Any) -> None:
    """Progress goes to stderr: stdout of a runner carries only its JSON answer."""
    print(*parts, file=sys.stderr, flush=True)


def repeat(fn: Callable[[], Any], reps: int, warmup: int = 0) -> list[float]:
    """Seconds taken by each of `reps` calls of `fn` (after `warmup` untimed calls)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def repeat_both(fn: Callable[[], Any], reps: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds (user + system) of each of `reps` calls of `fn`.

    On a loaded machine the wall clock mostly measures the wait for a CPU, and
    two libraries measured minutes apart see different loads; CPU time does not.
    """
    wall, cpu = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def force_rmtree(path: str) -> None:
    """Delete a folder tree even where a store made it read-only; a missing path is fine."""
    if not os.path.lexists(path):
        return

    def onerror(func: Any, target: str, exc_info: Any) -> None:
        parent = os.path.dirname(target)
        for p in (parent, target):
            try:
                if not os.path.islink(p):
                    os.chmod(p, os.lstat(p).st_mode | stat.S_IRWXU)
            except OSError:
                pass
        func(target)

    for folder, dirs, _ in os.walk(path):
        for d in [folder, *(os.path.join(folder, x) for x in dirs)]:
            try:
                if not os.path.islink(d):
                    os.chmod(d, os.lstat(d).st_mode | stat.S_IRWXU)
            except OSError:
                pass
    shutil.rmtree(path, onerror=onerror)


def disk_usage(root: str) -> dict[str, int]:
    """Allocated bytes (st_blocks, as `du` counts) and inodes below `root`, root excluded."""
    blocks = 0
    inodes = 0
    apparent = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            blocks += st.st_blocks * 512
            apparent += st.st_size
            inodes += 1
    return {"bytes": blocks, "inodes": inodes, "apparent_bytes": apparent}


def wait_for(path: str, timeout: float, poll: float = 0.002) -> None:
    """Block until `path` exists (a cross-process barrier); raise TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:.0f}s")
        time.sleep(poll)


def touch(path: str) -> None:
    with open(path, "w", encoding="utf-8"):
        pass


def emit(document: dict[str, Any]) -> None:
    """A runner's answer: one JSON document on stdout."""
    json.dump(document, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_section(path: str, name: str) -> str:
    """The marked section `name` of a markdown file (markers included), or ""."""
    start, end = _markers(name)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return ""
    a, b = text.find(start), text.find(end)
    return text[a : b + len(end)] + "\n" if a >= 0 and b > a else ""


def replace_section(path: str, name: str, body: str) -> None:
    """Put `body` between the markers of section `name` in a markdown file (appended if absent).

    Lets `tools/bench --huge` keep its table in BENCHMARKS.md, which a full
    `tools/bench` run otherwise rewrites (it carries the section over).
    """
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    a, b = text.find(start), text.find(end)
    if a >= 0 and b > a:
        text = text[:a] + block + text[b + len(end) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)

"""Benchmarks of remote caches: push and pull to file:// and to a local S3 server (moto).

Usage: tools/bench remote [--quick] [--reps N] [--against REV] [--remotes file,s3]
                          [--only big,small] [--json PATH] [--tmp DIR]

Two realizations are measured: one holding a single 1 GiB file ("big") and
one holding 20,000 small files of 100-2000 bytes ("small"); `--quick` uses
64 MiB and 2,000 files. For each, and for each remote (a file:// folder in
the same place as the stores, and moto's S3 server started as a separate
process on 127.0.0.1), it times a push from Alice's store, a pull into Bob's
empty store, and a pull of the closure Bob already has (no data moves).
Every push and pull runs in its own process, which reports its wall time and
peak RSS. The baseline is `cp -r` of the realization's folder, timed in every
repetition just before the transfers, so each transfer is also given as a
ratio of it (the median of the per-repetition ratios: a change of machine load
falls on both).

`--against REV` measures the lightstore of another revision in the same run
(checked out with `git worktree add` into the temporary folder, imported
through PYTHONPATH by this venv's interpreter), its processes interleaved
with this tree's: before/after figures under the same load. `--tmp` picks the
filesystem (a tmpfs such as /dev/shm keeps the disk out of it); the stores,
the remote and the copy are all there.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_common import GiB, MiB, force_rmtree, log, peak_rss_bytes  # noqa: E402

AWS = {
    "AWS_ACCESS_KEY_ID": "bench-key",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: The lightstore a child process imports (another revision's with --against).
CODE_ENV = "LIGHTSTORE_BENCH_CODE"


# -- child side ------------------------------------------------------------------------


def _child(argv: list[str]) -> int:
    """``_build ROOT KIND SIZE`` / ``_push ROOT URL RREF`` / ``_pull ROOT URL RREF``."""
    sys.path.insert(0, os.environ.get(CODE_ENV) or ROOT)
    from lightstore import build_outpath, build_wrapper, instantiate, match_only, mkdrv, realize1
    from lightstore.facade import Store

    mode, root, *rest = argv
    store = Store.open(root, create=True)
    t0 = time.perf_counter()
    if mode == "_build":
        kind, size = rest[0], int(rest[1])

        def big(b: Any) -> None:
            chunk = os.urandom(16 * MiB)
            with open(os.path.join(build_outpath(b), "big.bin"), "wb") as f:
                for _ in range(size // len(chunk)):
                    f.write(chunk[:-1] + os.urandom(1))  # no two chunks alike

        def small(b: Any) -> None:
            out = build_outpath(b)
            for i in range(size):
                folder = os.path.join(out, f"d{i // 500}")
                if i % 500 == 0:
                    os.mkdir(folder)
                with open(os.path.join(folder, f"f{i}.txt"), "wb") as f:
                    f.write(os.urandom(100 + (i * 37) % 1900))

        fn = big if kind == "big" else small
        rref = realize1(
            instantiate(
                lambda r: mkdrv({"name": kind, "size": size}, match_only(), build_wrapper(fn), r),
                S=store.settings,
            )
        )
        print(json.dumps({"rref": rref}))
        return 0
    url, rref = rest
    # moto assembles a multipart upload in Python: completing 1 GiB takes longer than
    # botocore's 60 s read timeout, whose retry would then find no upload.
    options = {"config_kwargs": {"read_timeout": 1800}} if url.startswith("s3://") else {}
    if mode == "_push":
        report = store.push(url, [rref], jobs=8, storage_options=options)
        moved = report.bytes_uploaded
    else:
        moved = len(store.pull(url, [rref], jobs=8, storage_options=options))
    print(
        json.dumps(
            {"seconds": time.perf_counter() - t0, "peak_rss": peak_rss_bytes(), "moved": moved}
        )
    )
    return 0


# -- driver side -----------------------------------------------------------------------


def _run(*args: str, env: dict[str, str] | None = None, code: str = ROOT) -> dict[str, Any]:
    full = dict(os.environ, PYTHONPATH=code, **{CODE_ENV: code}, **(env or {}))
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=3 * 3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_remote {args[0]} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def _folder_stats(path: str) -> tuple[int, int]:
    """Bytes and files below `path`."""
    total = count = 0
    for dirpath, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
        count += len(files)
    return total, count


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", ROOT, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _moto_ceiling() -> dict[str, Any]:
    """500 one-KiB PUTs from 8 threads, s3fs alone: the endpoint's own ceiling."""
    from concurrent.futures import ThreadPoolExecutor

    import s3fs

    fs = s3fs.S3FileSystem()
    fs.call_s3("create_bucket", Bucket="bench")
    payload = os.urandom(1024)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: fs.pipe_file(f"bench/raw/{i}", payload), range(500)))
    raw_s = time.perf_counter() - t0
    log(f"moto ceiling: {500 / raw_s:.0f} PUT/s")
    return {"requests_per_s": 500 / raw_s, "seconds": raw_s}


_OPS = ("push", "pull", "pull, already present")


def _measure(
    kind: str,
    size: int,
    tmp: str,
    sides: list[tuple[str, str]],
    remotes: list[str],
    reps: int,
    env: dict[str, str],
) -> list[dict[str, Any]]:
    """Every sample of one realization: `cp -r`, then push and pulls by each side, `reps`
    times; the sides' order alternates between repetitions."""
    alice = os.path.join(tmp, f"alice-{kind}")
    log(f"building the {kind} realization ({size})")
    rref = _run("_build", alice, kind, str(size))["rref"]
    sys.path.insert(0, ROOT)
    from lightstore.facade import Store

    folder = Store.open(alice).rref_path(rref)
    nbytes, nfiles = _folder_stats(folder)
    samples: list[dict[str, Any]] = []
    try:
        for rep in range(reps):
            copy = os.path.join(tmp, f"copy-{kind}")
            t0 = time.perf_counter()
            subprocess.run(["cp", "-r", folder, copy], check=True)
            samples.append(
                {"data": kind, "code": "-", "remote": "-", "op": "cp -r", "rep": rep}
                | {"seconds": time.perf_counter() - t0, "peak_rss": None}
            )
            force_rmtree(copy)
            for label, code in sides if rep % 2 == 0 else list(reversed(sides)):
                for remote in remotes:
                    tag = f"{kind}-{label}-{rep}"
                    url = f"file://{tmp}/remote-{tag}" if remote == "file" else f"s3://bench/{tag}"
                    bob = os.path.join(tmp, f"bob-{tag}")
                    for op, mode, root in zip(
                        _OPS, ("_push", "_pull", "_pull"), (alice, bob, bob), strict=True
                    ):
                        log(f"{kind} {label} {remote} #{rep + 1}: {op}")
                        r = _run(mode, root, url, rref, env=env, code=code)
                        samples.append(
                            {"data": kind, "code": label, "remote": remote, "op": op, "rep": rep}
                            | {"seconds": r["seconds"], "peak_rss": r["peak_rss"]}
                        )
                    force_rmtree(bob)
                    if remote == "file":
                        force_rmtree(url[len("file://") :])
    finally:
        force_rmtree(alice)
    for s in samples:
        s.update(bytes=nbytes, files=nfiles)
    return samples


def _summary(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (data, code, remote, op): medians, and the ratio to `cp -r` of the same
    repetition (its throughput over cp's; > 1 is faster than cp)."""
    cp = {(s["data"], s["rep"]): s["seconds"] for s in samples if s["op"] == "cp -r"}
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for s in samples:
        groups.setdefault((s["data"], s["code"], s["remote"], s["op"]), []).append(s)
    rows = []
    for (data, code, remote, op), group in groups.items():
        seconds = statistics.median(s["seconds"] for s in group)
        moves = op in ("push", "pull", "cp -r")
        ratios = [cp[(data, s["rep"])] / s["seconds"] for s in group if s["seconds"] > 0]
        rss = [s["peak_rss"] for s in group if s["peak_rss"]]
        rows.append(
            {
                "data": data,
                "code": code,
                "remote": remote,
                "op": op,
                "reps": len(group),
                "seconds": seconds,
                "mib_s": group[0]["bytes"] / MiB / seconds if moves and seconds else None,
                "files_s": group[0]["files"] / seconds if moves and seconds else None,
                "x_cp": statistics.median(ratios) if moves and ratios else None,
                "x_cp_range": (min(ratios), max(ratios)) if moves and ratios else None,
                "peak_rss": max(rss) if rss else None,
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    def num(v: float | None, fmt: str) -> str:
        width = int(fmt.split(".")[0])
        return "-".rjust(width) if v is None else format(v, fmt)

    lines = [
        f"{'data':6} {'code':10} {'remote':6} {'operation':22} {'reps':>4} {'median s':>9} "
        f"{'MiB/s':>8} {'files/s':>8} {'x cp -r':>8} {'(min-max)':>12} {'peak RSS':>9}"
    ]
    for r in rows:
        spread = "-" if r["x_cp_range"] is None else "{:.2f}-{:.2f}".format(*r["x_cp_range"])
        rss = "-" if r["peak_rss"] is None else f"{r['peak_rss'] / MiB:.0f} MiB"
        lines.append(
            f"{r['data']:6} {r['code']:10} {r['remote']:6} {r['op']:22} {r['reps']:4} "
            f"{r['seconds']:9.3f} {num(r['mib_s'], '8.1f')} {num(r['files_s'], '8.0f')} "
            f"{num(r['x_cp'], '8.2f')} {spread:>12} {rss:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):
        return _child(argv)
    parser = argparse.ArgumentParser(prog="tools/bench remote", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB and 2,000 files")
    parser.add_argument("--only", default="big,small", help="big, small or both")
    parser.add_argument("--remotes", default="file,s3", help="file, s3 or both")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians are reported)")
    parser.add_argument("--against", default=None, help="also measure this git revision")
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "remote.json"))
    parser.add_argument("--tmp", default=None, help="where to put stores and the file:// remote")
    args = parser.parse_args(argv)
    sizes = {"big": 64 * MiB if args.quick else GiB, "small": 2000 if args.quick else 20000}
    tmp = tempfile.mkdtemp(prefix="lightstore-bench-remote-", dir=args.tmp)
    moto: subprocess.Popen[bytes] | None = None
    samples: list[dict[str, Any]] = []
    ceiling: dict[str, Any] | None = None
    sides = [("this", ROOT)]
    worktree = None
    try:
        if args.against:
            sha = _git("rev-parse", "--verify", f"{args.against}^{{commit}}")
            worktree = os.path.join(tmp, f"rev-{sha[:9]}")
            _git("worktree", "add", "--detach", "--quiet", worktree, sha)
            sides.insert(0, (sha[:9], worktree))
        remotes = args.remotes.split(",")
        env: dict[str, str] = {}
        if "s3" in remotes:
            moto, endpoint = _start_moto()
            env = dict(AWS, AWS_ENDPOINT_URL=endpoint)
            os.environ.update(env)
            ceiling = _moto_ceiling()
        for kind in args.only.split(","):
            samples += _measure(kind, sizes[kind], tmp, sides, remotes, args.reps, env)
    finally:
        if moto is not None:
            moto.kill()
            moto.wait()
        if worktree is not None:
            subprocess.run(
                ["git", "-C", ROOT, "worktree", "remove", "--force", worktree],
                capture_output=True,
                check=False,
            )
        force_rmtree(tmp)
    rows = _summary(samples)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; tmp: {tmp}")
    if ceiling is not None:
        print(f"moto ceiling: {ceiling['requests_per_s']:.0f} PUT/s (s3fs alone, 8 threads)")
    print(_table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(
            {"sizes": sizes, "sides": sides, "ceiling": ceiling, "rows": rows, "samples": samples},
            f,
            indent=2,
        )
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

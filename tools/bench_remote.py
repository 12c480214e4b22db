"""Benchmarks of remote caches: push and pull to file:// and to a local S3 server (moto).

Usage: tools/bench remote [--quick] [--json PATH] [--tmp DIR] [--only big,small]

Two realizations are measured: one holding a single 1 GiB file ("big") and
one holding 20,000 small files of 100-2000 bytes ("small"); `--quick` uses
64 MiB and 2,000 files. For each, and for each remote (a file:// folder on
the same disk, and moto's S3 server started as a separate process on
127.0.0.1), it times a push from Alice's store, a pull into Bob's empty
store, and a pull of the closure Bob already has (no data moves). Every push
and pull runs in its own process, which reports its wall time and peak RSS.
The local baseline on the same run is a plain copy of the realization's
folder (`cp -r`), so throughputs can be read as a ratio of it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
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


# -- child side ------------------------------------------------------------------------


def _child(argv: list[str]) -> int:
    """``_build ROOT KIND SIZE`` / ``_push ROOT URL RREF`` / ``_pull ROOT URL RREF``."""
    sys.path.insert(0, ROOT)
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


def _run(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    full = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=3 * 3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_remote {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def _folder_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return total


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):
        return _child(argv)
    parser = argparse.ArgumentParser(prog="tools/bench remote", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB and 2,000 files")
    parser.add_argument("--only", default="big,small", help="big, small or both")
    parser.add_argument("--remotes", default="file,s3", help="file, s3 or both")
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "remote.json"))
    parser.add_argument("--tmp", default=None, help="where to put stores and the file:// remote")
    args = parser.parse_args(argv)
    sizes = {"big": 64 * MiB if args.quick else GiB, "small": 2000 if args.quick else 20000}
    tmp = tempfile.mkdtemp(prefix="lightstore-bench-remote-", dir=args.tmp)
    moto: subprocess.Popen[bytes] | None = None
    results: list[dict[str, Any]] = []
    try:
        remotes = args.remotes.split(",")
        env: dict[str, str] = {}
        if "s3" in remotes:
            moto, endpoint = _start_moto()
            env = dict(AWS, AWS_ENDPOINT_URL=endpoint)
            os.environ.update(env)
            import s3fs

            fs = s3fs.S3FileSystem()
            fs.call_s3("create_bucket", Bucket="bench")
            # The endpoint's own ceiling: 500 one-KiB PUTs from 8 threads, no lightstore.
            from concurrent.futures import ThreadPoolExecutor

            payload = os.urandom(1024)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: fs.pipe_file(f"bench/raw/{i}", payload), range(500)))
            raw_s = time.perf_counter() - t0
            results.append(
                {
                    "data": "raw",
                    "remote": "s3",
                    "op": "500 PUTs, s3fs alone",
                    "seconds": raw_s,
                    "bytes": 500 * 1024,
                    "peak_rss": None,
                    "requests_per_s": 500 / raw_s,
                }
            )
            log(f"moto ceiling: {500 / raw_s:.0f} PUT/s")
        for kind in args.only.split(","):
            alice = os.path.join(tmp, f"alice-{kind}")
            log(f"building the {kind} realization ({sizes[kind]})")
            rref = _run("_build", alice, kind, str(sizes[kind]))["rref"]
            sys.path.insert(0, ROOT)
            from lightstore.facade import Store

            folder = Store.open(alice).rref_path(rref)
            nbytes = _folder_bytes(folder)
            t0 = time.perf_counter()
            shutil.copytree(folder, os.path.join(tmp, f"copy-{kind}"), symlinks=True)
            copy_s = time.perf_counter() - t0
            force_rmtree(os.path.join(tmp, f"copy-{kind}"))
            results.append(
                {
                    "data": kind,
                    "remote": "-",
                    "op": "local copy (baseline)",
                    "seconds": copy_s,
                    "bytes": nbytes,
                    "peak_rss": None,
                }
            )
            for remote in remotes:
                url = f"file://{tmp}/remote-{kind}" if remote == "file" else f"s3://bench/{kind}"
                bob = os.path.join(tmp, f"bob-{kind}-{remote}")
                for op, mode, root in (
                    ("push", "_push", alice),
                    ("pull", "_pull", bob),
                    ("pull, already present", "_pull", bob),
                ):
                    log(f"{kind} {remote}: {op}")
                    r = _run(mode, root, url, rref, env=env)
                    results.append(
                        {
                            "data": kind,
                            "remote": remote,
                            "op": op,
                            "seconds": r["seconds"],
                            "bytes": nbytes,
                            "peak_rss": r["peak_rss"],
                        }
                    )
                force_rmtree(bob)
            force_rmtree(alice)
    finally:
        if moto is not None:
            moto.kill()
            moto.wait()
        force_rmtree(tmp)
    print(
        f"{'data':6} {'remote':6} {'operation':24} {'seconds':>9} {'MiB/s':>9} {'files/s':>9} {'peak RSS':>10}"
    )
    for r in results:
        rate = r["bytes"] / MiB / r["seconds"] if r["seconds"] > 0 else float("inf")
        files = (
            sizes["small"] / r["seconds"]
            if r["data"] == "small"
            else (500 / r["seconds"] if r["data"] == "raw" else None)
        )
        rss = f"{r['peak_rss'] / MiB:.0f} MiB" if r["peak_rss"] else "-"
        print(
            f"{r['data']:6} {r['remote']:6} {r['op']:24} {r['seconds']:9.2f} {rate:9.1f} "
            f"{(f'{files:.0f}' if files else '-'):>9} {rss:>10}"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"sizes": sizes, "results": results}, f, indent=2)
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Parallel realization benchmarks (lightstore only; the baseline is lightstore's own serial path).

- sweep-share: a 6-branch sweep (1 s per branch) realized by 1 process, then
  by 3 processes on one store started together: wall time of each, speedup
  (ideal 3), builds counted (each realization once).
- parallel-cpu: 32 independent stages of 0.2 s of CPU work each, serial vs
  `jobs=2` (the local worker pool, started by that realize: start-up
  included) vs `client=` a Dask LocalCluster of 2 workers (started and
  closed around the realize, as `jobs=2` did before the pool): speedups
  (ideal 2 on 2 cores).
- parallel-overhead: per-derivation time of trivial stages, serial vs
  through the already running pool of `jobs=2` vs an already running
  2-worker LocalCluster, uncached and cached; the overhead per derivation
  is (parallel - serial). Also the CPU time per uncached derivation of the
  caller and the pool's workers against serial (a direct measure of the
  pool's cost, which the machine's load does not stretch).

The driver (tools/bench_driver.py) calls `records()`; each measurement runs
in a fresh subprocess of the lightstore interpreter: ``python
tools/bench_parallel.py MODE ...`` answers one JSON line. ``python
tools/bench_parallel.py compare [--repeat N]`` runs both parallel workloads
(each in a fresh process, N times) and prints a table with the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ["sweep-share", "parallel-cpu", "parallel-overhead"]
BRANCHES = (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)


# -- driver side (standard library only) -------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _record(workload: str, metric: str, samples: list[float], unit: str, **extra: Any) -> dict:
    return {
        "workload": workload,
        "metric": metric,
        "param": {},
        "unit": unit,
        "samples": samples,
        "extra": extra,
    }


def _answer(proc: subprocess.Popen[str], timeout: float = 900) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_parallel worker failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _start(python: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [python, os.path.abspath(__file__), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _sweep_run(python: str, env: dict[str, str], tmp: str, procs: int, branch: float) -> dict:
    base = tempfile.mkdtemp(prefix=f"sweep{procs}-", dir=tmp)
    root, go, log = (os.path.join(base, x) for x in ("store", "go", "builds.log"))
    workers = [
        _start(
            python, env, "sweep", "--root", root, "--go", go, "--log", log, "--branch", str(branch)
        )
        for _ in range(procs)
    ]
    try:
        deadline = time.monotonic() + 300
        while len([f for f in os.listdir(base) if f.startswith("ready-")]) < procs:
            if any(p.poll() is not None for p in workers) or time.monotonic() > deadline:
                raise RuntimeError("sweep workers did not all start")
            time.sleep(0.01)
        started = time.time()
        open(go, "w").close()
        answers = [_answer(p) for p in workers]
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
            p.wait()
    with open(log, encoding="utf-8") as f:
        builds = [line.split()[1] for line in f if line.strip()]
    contexts = {json.dumps(a["context"], sort_keys=True) for a in answers}
    return {
        "time": max(a["stop"] for a in answers) - started,
        "builds": len(builds),
        "distinct": len(set(builds)),
        "same_result": len(contexts) == 1,
        "context": answers[0]["context"],
    }


def records(python: str, env: dict[str, str], tmp: str, only: set[str]) -> list[dict[str, Any]]:
    """Run the selected parallel workloads; return records in the driver's shape."""
    out: list[dict[str, Any]] = []
    if "sweep-share" in only:
        _log("[lightstore] 6-branch sweep: 1 process, then 3 processes on one store")
        serial = _sweep_run(python, env, tmp, 1, 1.0)
        shared = _sweep_run(python, env, tmp, 3, 1.0)
        out.append(_record("sweep-share", "time 1 process", [serial["time"]], "s"))
        out.append(_record("sweep-share", "time 3 processes", [shared["time"]], "s"))
        out.append(
            _record("sweep-share", "speedup", [serial["time"] / shared["time"]], "x", ideal=3)
        )
        out.append(
            _record(
                "sweep-share",
                "builds",
                [shared["builds"]],
                "count",
                distinct=shared["distinct"],
                same_rrefs_as_serial=shared["same_result"]
                and shared["context"] == serial["context"],
            )
        )
    if "parallel-cpu" in only:
        _log("[lightstore] 32 stages x 0.2 s CPU: serial vs jobs=2 vs a Dask LocalCluster")
        a = _answer(_start(python, env, "cpu", "--tmp", tmp, "--stages", "32", "--work", "0.2"))
        out.append(_record("parallel-cpu", "time serial", [a["serial"]], "s"))
        out.append(_record("parallel-cpu", "time jobs=2", [a["pool"]], "s"))
        out.append(_record("parallel-cpu", "time Dask LocalCluster", [a["dask"]], "s"))
        out.append(_record("parallel-cpu", "speedup", [a["serial"] / a["pool"]], "x", ideal=2))
        out.append(_record("parallel-cpu", "speedup Dask", [a["serial"] / a["dask"]], "x", ideal=2))
    if "parallel-overhead" in only:
        _log("[lightstore] per-derivation overhead: serial vs the jobs=2 pool vs a cluster")
        a = _answer(_start(python, env, "overhead", "--tmp", tmp, "--stages", "40"))
        for k in OVERHEAD_KEYS:
            out.append(_record("parallel-overhead", k, [a[k]], "s", stages=a["stages"]))
    return out


OVERHEAD_KEYS = [
    f"{way} {state}" for way in ("serial", "pool", "cluster") for state in ("uncached", "cached")
] + ["cpu serial", "cpu pool"]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def compare(python: str, repeat: int, stages: int, work: float, trivial: int) -> None:
    """Both parallel workloads `repeat` times, each in a fresh process; print medians and
    ratios (the figures of the README and BENCHMARKS.md)."""
    env = dict(os.environ)
    cpu: dict[str, list[float]] = {"serial": [], "pool": [], "dask": []}
    ovh: dict[str, list[float]] = {k: [] for k in OVERHEAD_KEYS}
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        for i in range(repeat):
            _log(f"run {i + 1}/{repeat}: {stages} stages x {work} s CPU")
            args = ["--tmp", tmp, "--stages", str(stages), "--work", str(work)]
            a = _answer(_start(python, env, "cpu", *args))
            for k in cpu:
                cpu[k].append(a[k])
            _log(f"run {i + 1}/{repeat}: {trivial} trivial stages")
            a = _answer(_start(python, env, "overhead", "--tmp", tmp, "--stages", str(trivial)))
            for k in ovh:
                ovh[k].append(a[k])
    c = {k: _median(v) for k, v in cpu.items()}
    o = {k: _median(v) for k, v in ovh.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"medians of {repeat} run(s); load average at the end {load:.2f}")
    print(f"{stages} stages x {work} s CPU (start-up of the workers included):")
    print(f"  serial                      {c['serial']:7.2f} s")
    print(
        f"  jobs=2 (local pool)         {c['pool']:7.2f} s   {c['serial'] / c['pool']:.2f}x serial"
    )
    print(
        f"  client=LocalCluster(2)      {c['dask']:7.2f} s   {c['serial'] / c['dask']:.2f}x serial"
    )
    print(f"{trivial} trivial stages, workers already running (ms per derivation):")
    print("                              uncached   cached   overhead vs serial (uncached)")
    for way in ("serial", "pool", "cluster"):
        unc, cac = o[f"{way} uncached"] * 1e3, o[f"{way} cached"] * 1e3
        extra = unc - o["serial uncached"] * 1e3
        print(f"  {way:<26}  {unc:8.2f} {cac:8.3f}   {extra:+.2f}")
    cpu_s, cpu_p = o["cpu serial"] * 1e3, o["cpu pool"] * 1e3
    print(
        f"  CPU per uncached derivation, caller and workers: serial {cpu_s:.2f} ms, "
        f"pool {cpu_p:.2f} ms ({cpu_p - cpu_s:+.2f})"
    )
    paired = {
        k: _median([s / t for s, t in zip(cpu["serial"], cpu[k], strict=True)])
        for k in ("pool", "dask")
    }
    print(
        f"  speedup of each run against its own serial time (median): jobs=2 "
        f"{paired['pool']:.2f}x, LocalCluster {paired['dask']:.2f}x"
    )
    print(f"  per-run samples: {json.dumps({'cpu': cpu, 'overhead': ovh})}")


# -- runner side (imports lightstore) ---------------------------------------


def _sweep_stage(log: str, branch: float) -> Any:
    from lightstore import build_outpath, build_wrapper, match_only, mkdrv, selfref

    def logged(name: str, body: Any) -> Any:
        def real(b: Any) -> None:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {name}\n")
            body(b)

        return real

    def write(text: str, sleep: float = 0.0) -> Any:
        def body(b: Any) -> None:
            time.sleep(sleep)
            with open(os.path.join(build_outpath(b), "out.txt"), "w", encoding="utf-8") as f:
                f.write(text)

        return body

    def first(S: Any, rrefs: list[str]) -> list[str] | None:
        return sorted(rrefs)[:1] or None

    def stage(r: Any) -> Any:
        d = mkdrv(
            {"name": "data", "out": [selfref, "out.txt"]},
            match_only(),
            build_wrapper(logged("data", write("data"))),
            r,
        )
        models = [
            mkdrv(
                {"name": "train", "lr": lr, "data": [d, "out.txt"], "out": [selfref, "out.txt"]},
                match_only(),
                build_wrapper(logged(f"train{lr}", write(f"model {lr}", branch))),
                r,
            )
            for lr in BRANCHES
        ]
        return mkdrv(
            {"name": "evaluate", "models": [[m, "out.txt"] for m in models]},
            first,
            build_wrapper(logged("evaluate", write("eval"))),
            r,
        )

    return stage


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def _cpu_stage(n: int, work: float) -> Any:
    from lightstore import build_outpath, build_wrapper, match_only, mkdrv

    def real(b: Any) -> None:
        _burn(work)
        with open(os.path.join(build_outpath(b), "out.txt"), "w", encoding="utf-8") as f:
            f.write(str(b.config["i"]))

    def stage(r: Any) -> Any:
        return [
            mkdrv({"name": f"cpu{i}", "i": i}, match_only(), build_wrapper(real), r)
            for i in range(n)
        ]

    return stage


def _trivial_stage(n: int) -> Any:
    from lightstore import build_outpath, build_wrapper, match_only, mkdrv

    def real(b: Any) -> None:
        with open(os.path.join(build_outpath(b), "out.txt"), "w", encoding="utf-8") as f:
            f.write(str(b.config["i"]))

    def stage(r: Any) -> Any:
        return [
            mkdrv({"name": f"t{i}", "i": i}, match_only(), build_wrapper(real), r) for i in range(n)
        ]

    return stage


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time the processes have run, in seconds (Linux: /proc/PID/schedstat, in ns)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
            total += int(f.read().split()[0])
    return total / 1e9


@contextlib.contextmanager
def _cluster(distributed: Any) -> Iterator[Any]:
    """A 2-worker Dask LocalCluster and its client, closed after."""
    import logging

    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["sweep", "cpu", "overhead", "compare"])
    p.add_argument("--root")
    p.add_argument("--go")
    p.add_argument("--log")
    p.add_argument("--branch", type=float, default=1.0)
    p.add_argument("--tmp")
    p.add_argument("--stages", type=int, default=32)
    p.add_argument("--work", type=float, default=0.2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--trivial", type=int, default=40)
    a = p.parse_args(argv)
    if a.mode == "compare":
        compare(sys.executable, a.repeat, a.stages, a.work, a.trivial)
        return

    import cloudpickle

    from lightstore import Registry, fsinit, instantiate, mkSS, realize
    from lightstore.facade import Store

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if a.mode == "sweep":
        fsinit(mkSS(a.root))
        stage = _sweep_stage(a.log, a.branch)
        open(os.path.join(os.path.dirname(a.root), f"ready-{os.getpid()}"), "w").close()
        while not os.path.exists(a.go):
            time.sleep(0.002)
        ctx = realize(instantiate(stage, S=mkSS(a.root)))[2]
        answer: dict[str, Any] = {
            "context": {d: sorted(r) for d, r in ctx.items()},
            "stop": time.time(),
        }
    elif a.mode == "cpu":
        answer = {}
        for name in ("serial", "pool", "dask"):
            store = Store.open(tempfile.mkdtemp(prefix=f"cpu-{name}-", dir=a.tmp), create=True)
            t0 = time.perf_counter()
            closure = instantiate(_cpu_stage(a.stages, a.work), r=Registry(store))
            if name == "dask":  # as jobs=2 did before the pool: import, start, realize, close
                import distributed

                with _cluster(distributed) as client:
                    realize(closure, client=client)
            else:
                realize(closure, **({"jobs": 2} if name == "pool" else {}))
            answer[name] = time.perf_counter() - t0
    else:
        import distributed

        answer = {"stages": a.stages}
        with _cluster(distributed) as client:
            client.run(lambda: __import__("lightstore.executors.dask"))
            for name, kw in (
                ("serial", {}),
                ("pool", {"jobs": 2}),
                ("cluster", {"client": client}),
            ):
                if name == "pool":  # started beforehand, as the cluster is
                    warm = Store.open(tempfile.mkdtemp(prefix="ovh-warm-", dir=a.tmp), create=True)
                    realize(instantiate(_trivial_stage(2), r=Registry(warm)), jobs=2)
                store = Store.open(tempfile.mkdtemp(prefix=f"ovh-{name}-", dir=a.tmp), create=True)
                pids = [os.getpid()]
                if name == "pool":
                    from lightstore.executors import local

                    pids += [w.pid for w in local._idle]
                for state in ("uncached", "cached"):
                    cpu0 = _cpu_seconds(pids)
                    t0 = time.perf_counter()
                    realize(instantiate(_trivial_stage(a.stages), r=Registry(store)), **kw)
                    answer[f"{name} {state}"] = (time.perf_counter() - t0) / a.stages
                    if state == "uncached" and name != "cluster":
                        answer[f"cpu {name}"] = (_cpu_seconds(pids) - cpu0) / a.stages
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

"""Stages shared by the tests of parallel realization (the local pool of `jobs=`, Dask).

Realizers are closures shipped to worker processes by cloudpickle; this module
is pickled by value, so the workers need not import it by name.
"""

from __future__ import annotations

import os
import sys
import time

import cloudpickle

from lightstore import build_outpath, build_wrapper, match_only, mkdrv, selfref

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def writer(name, sleep=0.0, log=None, fail=False, pid=False):
    """A realizer writing `name` to out.txt; it notes each start in the folder `log`
    (``name.pid.ns``), sleeps, may fail, and may write which process built it."""

    def real(b):
        if log:
            with open(os.path.join(log, f"{name}.{os.getpid()}.{time.monotonic_ns()}"), "w"):
                pass
        time.sleep(sleep)
        if fail:
            raise RuntimeError(f"{name} broke")
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(name)
        if pid:  # which process built it (makes the content differ per process)
            with open(os.path.join(build_outpath(b), "pid"), "w") as f:
                f.write(str(os.getpid()))

    return real


def node(r, name, deps=(), **kw):
    cfg = {"name": name, "out": [selfref, "out.txt"]}
    for i, d in enumerate(deps):
        cfg[f"dep{i}"] = d
    return mkdrv(cfg, match_only(), build_wrapper(writer(name, **kw)), r)


def fanout(n, sleep, log=None, fail=()):
    def stage(r):
        return [
            node(r, f"leaf{i}", sleep=sleep, log=log, fail=i in fail, pid=True) for i in range(n)
        ]

    return stage


def dag(r):
    """A diamond under a deeper chain: a -> (b, c) -> d -> e -> f, plus g(a, e)."""
    a = node(r, "a")
    b = node(r, "b", [a])
    c = node(r, "c", [a])
    d = node(r, "d", [b, c])
    e = node(r, "e", [d])
    f = node(r, "f", [e])
    g = node(r, "g", [a, e])
    return [f, g]


def builds(store):
    return store.catalogue.query("SELECT dref, status, pid, host FROM builds ORDER BY id")


def imported(store):
    return store.catalogue.query("SELECT count(*) FROM realizations WHERE imported IS NOT NULL")

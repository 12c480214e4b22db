"""The rest of Pylightnix's ``pylightnix.bashlike`` (shell-like helpers) and
``pylightnix.garb`` (the console garbage collector)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from lightstore.compat.current import store_of
from lightstore.compat.housekeeping import linkrref, store_gc
from lightstore.compat.queries import path2dref, path2rref
from lightstore.compat.wrapper import Build
from lightstore.foundation.errors import InvalidReferenceError, UsageError
from lightstore.foundation.files import walk
from lightstore.foundation.refs import DRef, Path, RRef, isdref, isrref, parse_dref, parse_rref


def lsdref_(r: DRef, S: Any = None) -> Iterable[str]:
    """The realization hashes (folder names) of a derivation."""
    store = store_of(S)
    d = parse_dref(r)
    for rref in store.catalogue.realizations_any_context(d):
        yield rref[5:37]


def lsrref_(r: RRef, fn: Sequence[str] = (), S: Any = None) -> Iterable[str]:
    """The names in a realization's folder (or in its sub-folder `fn`)."""
    yield from sorted(os.listdir(os.path.join(store_of(S).rref_path(parse_rref(r)), *fn)))


def lsrref(r: RRef, fn: Sequence[str] = (), S: Any = None) -> list[str]:
    """The names in a realization's folder (or in its sub-folder `fn`), as a list."""
    return list(lsrref_(r, fn, S))


def catrref_(r: RRef, fn: Sequence[str], S: Any = None) -> Iterable[str]:
    """The lines of file `fn` of a realization."""
    with open(os.path.join(store_of(S).rref_path(parse_rref(r)), *fn), encoding="utf-8") as f:
        yield from f


def _shell_folder(r: Any, S: Any) -> str:
    store = store_of(S)
    if r is None:
        return store.objects_dir
    if isinstance(r, Build):
        if not r.outpaths:
            raise UsageError("shell(build) needs a build with an output folder")
        return r.outpaths[0]
    if isrref(r):
        return store.rref_path(RRef(r))
    if isdref(r):
        return store.dref_path(DRef(r))
    if isinstance(r, str) and os.path.isdir(r):
        return r
    if isinstance(r, str) and os.path.isfile(r):
        return os.path.dirname(os.path.abspath(r))
    raise InvalidReferenceError(
        f"shell expects an RRef, a DRef, a Build, a folder or file path, or None; got {r!r}"
    )


def shell(
    r: RRef | DRef | Build | Path | str | None = None,
    S: Any = None,
    *,
    command: Sequence[str] | None = None,
    timeout: float | None = None,
) -> int:
    """Run ``$SHELL`` (default /bin/sh), or `command`, in the folder of `r`; return its exit code.

    `r` is a realization, a derivation, a Build (its output folder), a path,
    or None (the store's objects). The program inherits the terminal, as for
    an interactive shell in a REPL; `timeout` (seconds) stops it. Raises
    InvalidReferenceError for an `r` it cannot place, subprocess.TimeoutExpired
    after `timeout`.
    """
    cwd = _shell_folder(r, S)
    argv = list(command) if command is not None else [os.environ.get("SHELL", "/bin/sh")]
    return subprocess.run(argv, cwd=cwd, check=False, timeout=timeout).returncode


def shellref(r: RRef | DRef | None = None, S: Any = None, **kwargs: Any) -> int:
    """`shell` for a reference (Pylightnix's older name)."""
    return shell(r, S, **kwargs)


def linkrrefs(
    rrefs: Iterable[RRef],
    destdir: str | None = None,
    format: str = "_rref_%(T)s_%(N)s",
    S: Any = None,
) -> list[Path]:
    """`linkrref` for each realization; returns the links."""
    return [linkrref(r, destdir, format, S=S) for r in rrefs]


# -- pylightnix.garb -----------------------------------------------------------


def diskspace_h(sz: int) -> str:
    """A size in bytes for people: ``'  12 K'``, ``'   3 M'``, ``'   1 G'``."""
    if sz < 2**20:
        return f"{sz // 2**10:4} K"
    if sz < 2**30:
        return f"{sz // 2**20:4} M"
    return f"{sz // 2**30:4} G"


def gc_exceptions(keep_paths: list[Path]) -> tuple[list[DRef], list[RRef]]:
    """The DRefs and RRefs that symlinks among `keep_paths` (or in folders of it) point at."""
    keep_drefs: list[DRef] = []
    keep_rrefs: list[RRef] = []

    def check(p: str) -> None:
        if os.path.islink(p):
            target = os.path.realpath(p)
            rref = path2rref(target)
            if rref is not None and os.path.basename(target) == rref[5:37]:
                keep_rrefs.append(rref)
                return
            dref = path2dref(target)
            if dref is not None:
                keep_drefs.append(dref)

    for path in keep_paths:
        if os.path.islink(path):
            check(path)
        elif os.path.isdir(path):
            for root, dirs, _ in walk(path):
                for name in sorted(dirs):
                    check(os.path.join(root, name))
    return keep_drefs, keep_rrefs


def gc_candidates(
    keep: tuple[list[DRef], list[RRef]], S: Any = None
) -> tuple[set[DRef], set[RRef]]:
    """What would be removed if only `keep` (and what the store keeps anyway: pins, links, running builds) were kept."""
    return store_gc(keep_drefs=keep[0], keep_rrefs=keep[1], S=S)


def gc(
    keep_dirs: list[Path], interactive: bool = True, verbose: bool = True, S: Any = None
) -> None:
    """Remove everything not linked from `keep_dirs` (nor pinned), after confirmation if `interactive`.

    Raises UsageError for `interactive` without a terminal.
    """
    if interactive and not (sys.stdin is not None and sys.stdin.isatty()):
        raise UsageError("gc(interactive=True) needs a terminal; pass interactive=False")
    from lightstore.maintenance.gc import collect, garbage
    from lightstore.query.history import sizes_of

    store = store_of(S)
    keep_drefs, keep_rrefs = gc_exceptions(keep_dirs)
    plan = garbage(store, keep_drefs, keep_rrefs)
    drefs, rrefs = plan.drefs, plan.rrefs
    if verbose or interactive:
        known = sizes_of(store, rrefs)  # one query for the whole list
        sizes = {r: known.get(r, 0) for r in rrefs}
        if drefs or rrefs:
            print("Objects to be removed:")
        for dref in sorted(drefs):
            print(f"\t{dref}")
        for rref, size in sorted(sizes.items(), key=lambda x: x[1]):
            print(f"{diskspace_h(size)}\t{rref}")
        print(f"{diskspace_h(sum(sizes.values()))}\ttotal")
    if interactive:
        print("Confirm removal? [yN]")
        try:
            answer = input()
        except EOFError:  # the input ended: no answer is no
            answer = ""
        if answer.strip().lower() != "y":
            print("Cancelled by user")
            return
    # Marked again under the collector lock, removing only what was shown: what
    # another process built meanwhile on top of a shown object keeps it.
    collect(store, only=plan, keep_drefs=keep_drefs, keep_rrefs=keep_rrefs)


__all__ = [
    "catrref_",
    "diskspace_h",
    "gc",
    "gc_candidates",
    "gc_exceptions",
    "linkrrefs",
    "lsdref_",
    "lsrref",
    "lsrref_",
    "shell",
    "shellref",
]

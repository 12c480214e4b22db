"""Run Pylightnix's own test suite against lightstore (and optionally Pylightnix).

Normally started by `tools/pylightnix_suite`, which picks the interpreter.
The suite's `tests/` is copied from a Pylightnix checkout into a fresh
temporary folder and run with pytest there, with a package named
`pylightnix` on PYTHONPATH whose `__init__` does `from lightstore import *`
plus the standard-library names Pylightnix re-exports (read from the
checkout's `src/pylightnix/imports.py` and `types.py`). The test files are
not edited: their `from pylightnix import ...` lines reach lightstore through
that package; a test replacing a setting of a Pylightnix module (such as
`pylightnix.stages.fetch.WGET`) replaces it in the lightstore module that
reads it (`lightstore.compat.fetch`). Only the copy's `tests/__init__.py`,
which star-imports every test module for interactive use, is emptied so
that one module failing to import fails alone. Every run gets its own TMPDIR (the suite keeps its
stores under `gettempdir()/pylightnix/<test>`), LIGHTSTORE_ROOT and
PYLIGHTNIX_ROOT. Hypothesis runs with a fixed seed so counts are repeatable.

With `--reference` the same copy runs against real Pylightnix (the
checkout's own `src/`, or `--reference pypi` for pylightnix==0.3.0 from
PyPI) in a scratch venv under the cache folder, with the same pytest and
hypothesis versions, and the failures only lightstore has are listed.

Exit status: 0 (informational), 1 if `--min N` and fewer than N tests pass,
2 if the suite could not be run at all.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from bench_common import force_rmtree

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPOSITORY = "https://github.com/stagedml/pylightnix"
DEFAULT_REV = "7a7bacc"
PYPI_VERSION = "0.3.0"

# Used when the checkout has no src/ to read the re-exports from: the
# standard-library names the suite takes from `pylightnix`.
FALLBACK_STDLIB = [
    ("typing", "Callable", "Callable"),
    ("typing", "List", "List"),
    ("typing", "Optional", "Optional"),
    ("typing", "Tuple", "Tuple"),
    ("ast", "dump", "ast_dump"),
    ("ast", "parse", "parse"),
    ("os.path", "basename", "basename"),
    ("os.path", "isfile", "isfile"),
    ("os.path", "islink", "islink"),
    ("os", "readlink", "readlink"),
    ("textwrap", "dedent", "dedent"),
    ("copy", "deepcopy", "deepcopy"),
    ("inspect", "getsourcelines", "getsourcelines"),
    ("functools", "partial", "partial"),
]

# A pytest plugin that writes one outcome per test (and per module that
# failed to import) as JSON; loaded with `-p` in both interpreters.
REPORT_PLUGIN = """
import json, os

_outcomes = {}
_uncollected = {}


def _message(report):
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return crash.message
    if isinstance(longrepr, tuple):
        return str(longrepr[-1])
    lines = [l[2:].strip() for l in str(longrepr).splitlines() if l.startswith("E ")]
    return lines[-1] if lines else str(longrepr).strip().splitlines()[-1:][0] if str(longrepr).strip() else ""


def pytest_collectreport(report):
    if report.failed:
        _uncollected[report.nodeid] = _message(report)


def pytest_runtest_logreport(report):
    known = _outcomes.get(report.nodeid)
    if known is not None and known[0] in ("failed", "skipped"):
        return
    if report.failed:
        _outcomes[report.nodeid] = ("failed", _message(report))
    elif report.skipped:
        _outcomes[report.nodeid] = ("skipped", _message(report))
    elif report.when == "call":
        _outcomes[report.nodeid] = ("passed", "")


def pytest_sessionfinish(session):
    with open(os.environ["PLX_SUITE_REPORT"], "w") as f:
        json.dump({"outcomes": _outcomes, "uncollected": _uncollected}, f)
"""

# Pylightnix modules whose settings a test may replace (`pylightnix.stages.fetch.WGET =
# ...`), and the lightstore module that reads them: a write to one of its names on the
# shim module is made on lightstore's module too.
SETTINGS_MODULES = {
    "pylightnix.stages.fetch": "lightstore.compat.fetch",
    "pylightnix.stages.fetch2": "lightstore.compat.fetch",
    "pylightnix.arch": "lightstore.compat.fetch",
}

FORWARDING_SHIM = """from pylightnix import *
import sys as _sys
import types as _types
import {target} as _target


class _Forwarding(_types.ModuleType):
    def __setattr__(self, name, value):
        if not name.startswith("_") and hasattr(_target, name):
            setattr(_target, name, value)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Forwarding
"""

DISTUTILS_SPAWN = """
from shutil import which


def find_executable(executable, path=None):
    return which(executable, path=path)
"""


class CannotRun(Exception):
    """The suite could not be run; the message says why and what to do."""


@dataclasses.dataclass
class Result:
    """Outcomes of one run: test id -> (outcome, one-line message)."""

    label: str
    outcomes: dict[str, tuple[str, str]]

    @property
    def passed(self) -> int:
        return sum(1 for outcome, _ in self.outcomes.values() if outcome == "passed")

    def failing(self) -> list[str]:
        return sorted(t for t, (outcome, _) in self.outcomes.items() if outcome != "passed")


def log(message: str) -> None:
    print(f"pylightnix_suite: {message}", file=sys.stderr, flush=True)


def git(*args: str, cwd: str | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    if done.returncode != 0:
        raise CannotRun(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def obtain_checkout(args: argparse.Namespace) -> str:
    """The Pylightnix checkout to take the tests from: --checkout, or a clone in the cache."""
    if args.checkout:
        path = os.path.abspath(args.checkout)
        if not os.path.isdir(os.path.join(path, "tests")):
            raise CannotRun(f"{path} has no tests/ folder: is it a Pylightnix checkout?")
        return path
    clone = os.path.join(args.cache, "pylightnix")
    if not os.path.isdir(os.path.join(clone, ".git")):
        log(f"cloning {REPOSITORY} into {clone}")
        os.makedirs(args.cache, exist_ok=True)
        try:
            git("clone", "--quiet", REPOSITORY, clone + ".part", timeout=300)
        except (CannotRun, OSError, subprocess.TimeoutExpired) as e:
            force_rmtree(clone + ".part")
            raise CannotRun(
                f"could not clone {REPOSITORY} ({e}); get a Pylightnix checkout "
                f"(commit {DEFAULT_REV}) some other way and pass --checkout PATH"
            ) from None
        os.rename(clone + ".part", clone)
    git("checkout", "--quiet", args.rev, cwd=clone)
    return clone


def describe(checkout: str) -> str:
    if not os.path.exists(os.path.join(checkout, ".git")):
        return "not a git checkout"
    try:
        return git("rev-parse", "--short", "HEAD", cwd=checkout, timeout=30)
    except (CannotRun, OSError, subprocess.TimeoutExpired):
        return "not a git checkout"


def stdlib_reexports(checkout: str) -> list[tuple[str, str, str]]:
    """(module, name, alias) for every non-Pylightnix `from X import ...` in
    Pylightnix's imports.py and types.py: the names it re-exports."""
    found: list[tuple[str, str, str]] = []
    for module in ("imports.py", "types.py"):
        path = os.path.join(checkout, "src", "pylightnix", module)
        if not os.path.isfile(path):
            return FALLBACK_STDLIB
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "pylightnix":
                    continue
                found += [(node.module, a.name, a.asname or a.name) for a in node.names]
    return found


def suite_modules(tests: str) -> set[str]:
    """Every `pylightnix.X` module the suite imports."""
    modules: set[str] = set()
    for name in os.listdir(tests):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(tests, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules.update(a.name for a in node.names)
    return {m for m in modules if m.split(".")[0] == "pylightnix" and m != "pylightnix"}


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def make_shim(folder: str, checkout: str, tests: str) -> None:
    """A `pylightnix` package that takes every name from lightstore."""
    lines = ['"""Pylightnix names, from lightstore (made by tools/pylightnix_suite)."""']
    for module, name, alias in stdlib_reexports(checkout):
        # Each alone: one the interpreter lacks must not hide the others.
        lines.append(
            f"try:\n    from {module} import {name} as {alias}\nexcept ImportError:\n    pass"
        )
    lines.append("from lightstore import *  # lightstore's names win over the standard library's")
    write(os.path.join(folder, "pylightnix", "__init__.py"), "\n".join(lines) + "\n")
    # Submodules the suite imports (pylightnix.either, pylightnix.stages.fetch, ...)
    # as packages, so a module may also have submodules; each re-exports the same names.
    for module in suite_modules(tests):
        parts = module.split(".")
        for depth in range(2, len(parts) + 1):
            name = ".".join(parts[:depth])
            target = os.path.join(folder, *parts[:depth], "__init__.py")
            if not os.path.exists(target):
                settings = SETTINGS_MODULES.get(name)
                text = FORWARDING_SHIM.format(target=settings) if settings else None
                write(target, text or "from pylightnix import *\n")


def make_reference_package(folder: str, checkout: str) -> None:
    """A copy of the checkout's own Pylightnix, with the version.py its setup.py would write."""
    source = os.path.join(checkout, "src", "pylightnix")
    if not os.path.isdir(source):
        raise CannotRun(f"{checkout} has no src/pylightnix: use --reference pypi")
    target = os.path.join(folder, "pylightnix")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    version = os.path.join(target, "version.py")
    if not os.path.exists(version):
        write(version, f"__version__ = {describe(checkout)!r}\n")


def interpreter_has(python: str, code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def versions(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({p: m.version(p) for p in ('pytest', 'hypothesis')}))"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotRun(f"{python} lacks pytest or hypothesis: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def reference_python(args: argparse.Namespace, pins: dict[str, str]) -> str:
    """A scratch venv with the same pytest and hypothesis (and pylightnix from PyPI if asked)."""
    venv = os.path.join(args.cache, "reference-venv")
    python = os.path.join(venv, "bin", "python")
    wanted = [f"{p}=={v}" for p, v in sorted(pins.items())] + ["pytest-timeout"]
    if args.reference == "pypi":
        wanted.append(f"pylightnix=={PYPI_VERSION}")
    stamp = os.path.join(venv, ".pylightnix-suite")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == " ".join(wanted):
                return python
    log(f"preparing {venv} ({' '.join(wanted)})")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    done = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise CannotRun(f"could not install {' '.join(wanted)}: {done.stderr.strip()[-500:]}")
    write(stamp, " ".join(wanted))
    return python


def count_tests(path: str) -> list[str]:
    """Module-level `test_*` functions of one test file (for a module that did not import)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    ]


def run_suite(
    args: argparse.Namespace, label: str, python: str, checkout: str, reference: bool
) -> Result:
    """Copy the tests to a fresh folder and run them with pytest in `python`."""
    work = tempfile.mkdtemp(prefix="pylightnix-suite-")
    try:
        suite = os.path.join(work, "suite")
        tests = os.path.join(suite, "tests")
        shutil.copytree(
            os.path.join(checkout, "tests"), tests, ignore=shutil.ignore_patterns("__pycache__")
        )
        write(os.path.join(tests, "__init__.py"), "")
        # Our own ini: the checkout's adds --mypy (pytest-mypy).
        write(os.path.join(suite, "pytest.ini"), "[pytest]\naddopts =\n")
        packages = os.path.join(work, "packages")
        os.makedirs(packages)
        if not reference:
            make_shim(packages, checkout, tests)
        elif args.reference == "checkout":
            make_reference_package(packages, checkout)
        write(os.path.join(packages, "_plx_suite_report.py"), REPORT_PLUGIN)
        if not interpreter_has(python, "import distutils.spawn"):
            # Python 3.12 dropped distutils; the suite (and Pylightnix) use find_executable.
            write(os.path.join(packages, "distutils", "__init__.py"), "")
            write(os.path.join(packages, "distutils", "spawn.py"), DISTUTILS_SPAWN)
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp)
        report = os.path.join(work, "report.json")
        env = {
            **os.environ,
            "PYTHONPATH": packages,
            "TMPDIR": tmp,
            "LIGHTSTORE_ROOT": os.path.join(work, "default-lightstore"),
            "PYLIGHTNIX_ROOT": os.path.join(work, "default-pylightnix"),
            "PLX_SUITE_REPORT": report,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        command = [
            python,
            "-m",
            "pytest",
            "-p",
            "_plx_suite_report",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-c",
            os.path.join(suite, "pytest.ini"),
            "--rootdir",
            suite,
            f"--hypothesis-seed={args.seed}",
            "-o",
            f"timeout={args.timeout}",
            "-q",
            "--continue-on-collection-errors",
            *args.pytest_args,
            "tests",
        ]
        log(f"running the suite against {label} ({python})")
        output = os.path.join(work, "pytest.log")
        with open(output, "w") as out:
            done = subprocess.run(
                command,
                cwd=suite,
                env=env,
                stdout=None if args.verbose else out,
                stderr=subprocess.STDOUT if not args.verbose else None,
            )
        if not os.path.exists(report):
            tail = ""
            if not args.verbose:
                with open(output) as f:
                    tail = f.read()[-2000:]
            raise CannotRun(f"pytest exited {done.returncode} without results:\n{tail}")
        with open(report) as f:
            data = json.load(f)
        outcomes = {k: (v[0], v[1]) for k, v in data["outcomes"].items()}
        for nodeid, message in data["uncollected"].items():
            path = os.path.join(suite, nodeid)
            if not os.path.isfile(path):
                outcomes[nodeid] = ("failed", f"not collected: {message}")
                continue
            for name in count_tests(path):
                outcomes[f"{nodeid}::{name}"] = ("failed", f"module did not import: {message}")
        return Result(label, outcomes)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            force_rmtree(work)


def one_line(message: str, width: int = 160) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= width else text[: width - 3] + "..."


def show(result: Result, ids: list[str]) -> None:
    for test in ids:
        outcome, message = result.outcomes[test]
        tag = "" if outcome == "failed" else f"[{outcome}] "
        print(f"  {test}  {tag}{one_line(message)}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/pylightnix_suite",
        description=(
            "Run Pylightnix's own test suite (tests/ of a Pylightnix checkout) against "
            "lightstore through a `pylightnix` package that takes every name from "
            "lightstore; print `passed N of M` and the failing tests. Extra arguments "
            "after `--` go to pytest (e.g. -- -k test_lens)."
        ),
        epilog="Exit status: 0, or 1 below --min, or 2 when the suite could not be run.",
    )
    p.add_argument(
        "--checkout",
        metavar="PATH",
        help=f"a Pylightnix checkout to take tests/ from (default: clone {REPOSITORY} into the cache)",
    )
    p.add_argument(
        "--rev",
        default=DEFAULT_REV,
        help=f"commit to check out in the cached clone (default {DEFAULT_REV}; not used with --checkout)",
    )
    p.add_argument(
        "--reference",
        nargs="?",
        const="checkout",
        choices=["checkout", "pypi"],
        help=(
            "also run the suite against real Pylightnix: the checkout's own src/ (default) "
            f"or pylightnix=={PYPI_VERSION} from PyPI, in a scratch venv under the cache; "
            "lists the failures only lightstore has"
        ),
    )
    p.add_argument(
        "--min", type=int, metavar="N", help="exit 1 if fewer than N tests pass on lightstore"
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that has lightstore, pytest and hypothesis (default: the project venv)",
    )
    p.add_argument(
        "--cache",
        default=os.path.join(ROOT, "build", "pylightnix-suite"),
        help="folder for the clone and the reference venv (default build/pylightnix-suite)",
    )
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    p.add_argument(
        "--timeout", type=int, default=600, help="seconds per test (pytest-timeout; default 600)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary run folders")
    p.add_argument("--verbose", action="store_true", help="show pytest's output as it runs")
    p.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    # A terminated run still removes its temporary folders (the `finally`s run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    args = parse_args(argv)
    args.cache = os.path.abspath(args.cache)
    # pytest runs in another folder: a relative path or a bare name must not depend on it.
    if os.sep in args.python:
        args.python = os.path.abspath(args.python)
    else:
        args.python = shutil.which(args.python) or args.python
    try:
        if not interpreter_has(args.python, "import lightstore"):
            raise CannotRun(f"{args.python} cannot import lightstore (try tools/setup test)")
        pins = versions(args.python)
        checkout = obtain_checkout(args)
        print(f"Pylightnix tests: {checkout} (commit {describe(checkout)})")
        ours = run_suite(args, "lightstore", args.python, checkout, reference=False)
        theirs = None
        if args.reference:
            python = reference_python(args, pins)
            label = (
                f"Pylightnix {PYPI_VERSION} (PyPI)"
                if args.reference == "pypi"
                else "Pylightnix (checkout src/)"
            )
            theirs = run_suite(args, label, python, checkout, reference=True)
    except CannotRun as e:
        log(str(e))
        return 2
    print(f"lightstore: passed {ours.passed} of {len(ours.outcomes)}")
    if ours.failing():
        print("failing on lightstore:")
        show(ours, ours.failing())
    if theirs is not None:
        print(f"{theirs.label}: passed {theirs.passed} of {len(theirs.outcomes)}")
        their_failing = set(theirs.failing())
        if their_failing:
            print(f"failing on {theirs.label}:")
            show(theirs, sorted(their_failing))
        only_ours = [t for t in ours.failing() if t not in their_failing]
        print(f"failing on lightstore only ({len(only_ours)}):")
        show(ours, only_ours)
        missing = sorted(set(theirs.outcomes) - set(ours.outcomes))
        if missing:
            print(f"not run on lightstore ({len(missing)}): {' '.join(missing)}")
    if args.min is not None and ours.passed < args.min:
        log(f"{ours.passed} tests passed on lightstore, fewer than --min {args.min}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

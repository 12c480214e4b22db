"""tools/pylightnix_suite on a small stand-in for a Pylightnix checkout.

The real suite (github.com/stagedml/pylightnix) is not vendored and this
machine may not reach GitHub, so a fake checkout with a few test modules
checks what the tool promises: tests import `pylightnix` and get lightstore's
names plus Pylightnix's standard-library re-exports, submodules import, a
module that fails to import fails alone with all its tests counted, each run
gets its own TMPDIR, and the exit status follows --min.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "pylightnix_suite.py")


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "pylightnix"
    # Pylightnix's own re-exports, read by the tool to build the shim.
    write(root / "src" / "pylightnix" / "imports.py", "from functools import partial\n")
    write(root / "src" / "pylightnix" / "types.py", "from typing import List\n")
    write(root / "pytest.ini", "[pytest]\naddopts = --no-such-option\n")
    # Star-imports every module, as Pylightnix's does: emptied in the copy.
    write(root / "tests" / "__init__.py", "from tests.test_broken import *\n")
    write(
        root / "tests" / "test_store.py",
        textwrap.dedent(
            """
        import functools, os
        from tempfile import gettempdir
        from pylightnix import (mkSS, fsinit, instantiate, realize1, mknode, isrref,
                                partial, List, LightstoreError)

        def test_realize():
            assert partial is functools.partial and LightstoreError
            S = mkSS(os.path.join(gettempdir(), 'pylightnix', 'test_realize'))
            fsinit(S, remove_existing=True)
            stage = lambda r: mknode(r, {'name': 'a', 'x': 1})
            assert isrref(realize1(instantiate(stage, S=S)))

        def test_tmpdir_is_private():
            assert 'pylightnix-suite-' in gettempdir()

        def test_fails():
            assert 1 == 2, 'deliberate failure'
        """
        ),
    )
    write(
        root / "tests" / "test_submodules.py",
        textwrap.dedent(
            """
        from pylightnix.either import mkdrvE
        import pylightnix.stages.fetch

        def test_submodules():
            assert callable(mkdrvE) and callable(pylightnix.stages.fetch.fetchurl)

        def test_replaced_setting_reaches_lightstore():
            import lightstore.compat.fetch
            old = pylightnix.stages.fetch.WGET
            try:
                pylightnix.stages.fetch.WGET = lambda: '/bin/mockwget'
                assert lightstore.compat.fetch.WGET() == '/bin/mockwget'
            finally:
                pylightnix.stages.fetch.WGET = old
            assert lightstore.compat.fetch.WGET is old
        """
        ),
    )
    write(
        root / "tests" / "test_broken.py",
        textwrap.dedent(
            """
        from pylightnix import no_such_name

        def test_one():
            pass

        def test_two():
            pass
        """
        ),
    )
    return root


def run(
    *args: str, python: str = sys.executable, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, TOOL, "--python", python, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_counts_and_failures(checkout, tmp_path):
    done = run("--checkout", str(checkout), "--cache", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert "lightstore: passed 4 of 7" in done.stdout
    failing = done.stdout.split("failing on lightstore:")[1].splitlines()
    assert any("test_store.py::test_fails" in f and "deliberate failure" in f for f in failing)
    for name in ("test_one", "test_two"):
        line = next(f for f in failing if f"test_broken.py::{name}" in f)
        assert "did not import" in line and "no_such_name" in line
    assert not any("test_realize" in f or "test_submodules" in f for f in failing)


def test_a_relative_python_path(checkout, tmp_path):
    """--python relative to the folder the tool is started in, not the one pytest runs in."""
    relative = os.path.relpath(sys.executable, ROOT)
    done = run(
        "--checkout", str(checkout), "--cache", str(tmp_path / "c"), python=relative, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "lightstore: passed 4 of 7" in done.stdout


@pytest.mark.slow
def test_min_fails_below(checkout, tmp_path):
    assert run("--checkout", str(checkout), "--min", "4").returncode == 0
    done = run("--checkout", str(checkout), "--min", "5")
    assert done.returncode == 1
    assert "fewer than --min 5" in done.stderr


def test_cannot_run_without_tests(tmp_path):
    done = run("--checkout", str(tmp_path))
    assert done.returncode == 2
    assert "no tests/ folder" in done.stderr


def test_entry_point_is_valid_bash():
    subprocess.run(["bash", "-n", os.path.join(ROOT, "tools", "pylightnix_suite")], check=True)

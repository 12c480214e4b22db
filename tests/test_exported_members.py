"""The public surface: `lightstore.__all__` is pinned, and the documented API is all there.

Adding or removing an export is a deliberate act: update EXPECTED here too.
"""

from __future__ import annotations

import builtins
import pathlib

import pytest

import lightstore

#: Every public name Pylightnix defines in its own modules, as ``module name``
#: lines, made by ``tools/pylightnix_names.py`` from stagedml/pylightnix.
PYLIGHTNIX_NAMES_FILE = pathlib.Path(__file__).parent / "data" / "pylightnix_names.txt"
PYLIGHTNIX_NAMES = [
    tuple(line.split())
    for line in PYLIGHTNIX_NAMES_FILE.read_text(encoding="utf-8").splitlines()
    if line.strip()
]
#: Pylightnix names not provided yet (the list shrinks to nothing).
NOT_YET: set[str] = set()

#: lightstore's own names (its core API, errors, and the vocabulary of its documentation).
EXPECTED_CORE = [
    "ArchiveError",
    "Attrs",
    "Build",
    "BuildError",
    "CatalogueCorruptError",
    "CatalogueVersionError",
    "ChecksumError",
    "Closure",
    "Config",
    "Context",
    "DRef",
    "Derivation",
    "DiskFullError",
    "IntegrityError",
    "InvalidConfigError",
    "InvalidAnnotationError",
    "InvalidMetricError",
    "InvalidReferenceError",
    "Lens",
    "LightstoreError",
    "LockTimeout",
    "MatcherError",
    "Name",
    "NotRealizedError",
    "Path",
    "PromiseError",
    "RRef",
    "RealizeOptions",
    "RefPath",
    "Registry",
    "StorageSettings",
    "Store",
    "StoreError",
    "StoreNotFoundError",
    "StoreReadOnlyError",
    "UnknownReferenceError",
    "alldrefs",
    "allrrefs",
    "autostage",
    "build_cattrs",
    "build_config",
    "build_context",
    "build_deref",
    "build_deref_",
    "build_metric",
    "build_metrics",
    "build_name",
    "build_outpath",
    "build_outpaths",
    "build_path",
    "build_paths",
    "build_wrapper",
    "catref",
    "cfgdict",
    "copy_closure",
    "current_registry",
    "current_storage",
    "diff",
    "dref2path",
    "drefcfg",
    "drefcfg_",
    "drefdeps",
    "drefdeps1",
    "drefrrefs",
    "drefrrefsC",
    "du",
    "fetchlocal",
    "fetchurl",
    "find",
    "fsinit",
    "instantiate",
    "isdref",
    "isrefpath",
    "isrref",
    "linkdref",
    "linkrref",
    "lsref",
    "match",
    "match_all",
    "match_exact",
    "match_latest",
    "match_only",
    "match_some",
    "mkSS",
    "mkconfig",
    "mkdref",
    "mkdrv",
    "mkfile",
    "mklens",
    "mknode",
    "mkregistry",
    "mkrref",
    "path2dref",
    "path2rref",
    "realize",
    "realize1",
    "realizeMany",
    "realize_closure",
    "realized",
    "redefine",
    "rmref",
    "rootdrefs",
    "rootrrefs",
    "rref2dref",
    "rref2path",
    "rrefctx",
    "rrefdeps",
    "rrefdeps1",
    "selfref",
    "spack",
    "store_gc",
    "sunpack",
    "undref",
    "unrref",
    "UsageError",
    "AmbiguousReferenceError",
]

EXPECTED = sorted(
    set(EXPECTED_CORE) | {name for _, name in PYLIGHTNIX_NAMES if name not in NOT_YET}
)

#: The API, group by group: what `from lightstore import *` must provide.
API_NAMES = {
    "conventions": [
        "Path",
        "cfgdict",
        "match_all",
        "match_only",
        "match_some",
        "match_latest",
        "match_exact",
        "match",
    ],
    "storage": ["mkSS", "fsinit", "current_storage", "StorageSettings"],
    "registry and stages": [
        "Registry",
        "mkregistry",
        "current_registry",
        "mkconfig",
        "mkdrv",
        "build_wrapper",
        "Build",
        "build_outpath",
        "build_outpaths",
        "build_path",
        "build_cattrs",
        "build_deref",
        "selfref",
        "instantiate",
        "realize1",
        "realizeMany",
        "realize",
        "redefine",
        "realized",
    ],
    "decorator": ["autostage"],
    "lenses": ["mklens"],
    "queries": [
        "alldrefs",
        "allrrefs",
        "drefrrefs",
        "drefrrefsC",
        "rootdrefs",
        "rootrrefs",
        "drefdeps",
        "rrefdeps",
        "drefdeps1",
        "rrefdeps1",
        "drefcfg",
        "rrefctx",
        "rref2dref",
        "rref2path",
        "dref2path",
        "isdref",
        "isrref",
        "mkdref",
        "mkrref",
        "undref",
        "unrref",
        "path2rref",
        "path2dref",
    ],
    "housekeeping": [
        "store_gc",
        "rmref",
        "linkrref",
        "linkdref",
        "lsref",
        "catref",
        "du",
        "find",
        "diff",
    ],
    "exchange": ["spack", "sunpack", "copy_closure"],
    "built-in stages": ["mknode", "mkfile", "fetchurl", "fetchlocal"],
}


def test_all_is_pinned():
    assert sorted(lightstore.__all__) == EXPECTED
    assert len(set(lightstore.__all__)) == len(lightstore.__all__)


def test_pylightnix_names_are_pinned():
    """The list itself is pinned: 303 names from 16 modules (Reference.md adds one)."""
    assert len(PYLIGHTNIX_NAMES) == 303
    assert len({name for _, name in PYLIGHTNIX_NAMES}) == 303
    modules = {module for module, _ in PYLIGHTNIX_NAMES}
    assert modules == {
        "arch", "bashlike", "build", "core", "deco", "either", "garb", "lens", "repl",
        "types", "tz", "utils", "stages.fetch", "stages.fetch2", "stages.trivial", "reference",
    }  # fmt: skip
    assert ("reference", "repl_continueAll") in PYLIGHTNIX_NAMES


@pytest.mark.parametrize("module", sorted({m for m, _ in PYLIGHTNIX_NAMES}))
def test_every_pylightnix_name_imports_from_lightstore(module):
    names = [n for m, n in PYLIGHTNIX_NAMES if m == module and n not in NOT_YET]
    namespace: dict[str, object] = {}
    exec("from lightstore import *", namespace)
    assert [n for n in names if n not in namespace] == []
    for name in names:
        exec(f"from lightstore import {name}", {})


def test_every_exported_name_resolves():
    for name in lightstore.__all__:
        assert hasattr(lightstore, name), name


def test_exported_functions_and_classes_are_documented():
    import inspect

    undocumented = [
        name
        for name in lightstore.__all__
        if (inspect.isfunction(obj := getattr(lightstore, name)) or inspect.isclass(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize("group", sorted(API_NAMES))
def test_star_import_provides_the_api_names(group):
    namespace: dict[str, object] = {}
    exec("from lightstore import *", namespace)
    missing = [n for n in API_NAMES[group] if n not in namespace]
    assert missing == []
    for name in API_NAMES[group]:
        assert namespace[name] is getattr(lightstore, name)


def test_star_import_does_not_shadow_builtins_unexpectedly():
    """`from lightstore import *` replaces no builtin name."""
    shadowed = sorted(n for n in lightstore.__all__ if hasattr(builtins, n))
    assert shadowed == []


def test_error_hierarchy():
    errors = [
        n
        for n in lightstore.__all__
        if n.endswith("Error") or n in ("LockTimeout", "PylightnixException", "PromiseException")
    ]
    for name in errors:
        assert issubclass(getattr(lightstore, name), lightstore.LightstoreError), name
    assert issubclass(lightstore.InvalidConfigError, ValueError)
    assert issubclass(lightstore.InvalidReferenceError, ValueError)
    assert issubclass(lightstore.UnknownReferenceError, KeyError)
    assert issubclass(lightstore.StoreError, OSError)
    assert issubclass(lightstore.PromiseError, lightstore.BuildError)
    assert issubclass(lightstore.LockTimeout, TimeoutError)
    assert issubclass(lightstore.ArchiveError, ValueError)
    assert issubclass(lightstore.ChecksumError, ValueError)
    for sub in ("StoreNotFoundError", "StoreReadOnlyError", "CatalogueVersionError"):
        assert issubclass(getattr(lightstore, sub), lightstore.StoreError)


def test_calling_conventions():
    import inspect

    # Queries and housekeeping take the storage as an optional argument `S`.
    for name in [*API_NAMES["queries"][:15], "store_gc", "rmref", "lsref", "du", "find", "diff"]:
        if name in ("rref2dref",):
            continue
        params = inspect.signature(getattr(lightstore, name)).parameters
        assert "S" in params, name
        assert params["S"].default is None, name
    assert list(inspect.signature(lightstore.Registry).parameters) == ["S"]
    assert inspect.signature(lightstore.mkdrv).parameters["r"].default is None
    assert lightstore.Path("/a") == "/a"  # a NewType of str, as in Pylightnix

"""lightstore: immutable, content-addressed results of computations, with a SQLite catalogue.

The core is explicit and typed: `Store` (tree + catalogue), `Registry`,
`instantiate`, `realize_closure`. On top of it, this package exports the
Pylightnix vocabulary (`mkdrv`, `realize1`, `mklens`, `autostage`, ...) so
that a Pylightnix pipeline runs by changing its import to
``from lightstore import *``. Errors are documented in `lightstore.foundation.errors`.
"""

# Pylightnix's remaining vocabulary, module by module (see tests/data/pylightnix_names.txt).
from lightstore.compat import bashlike as _bashlike
from lightstore.compat import build as _build
from lightstore.compat import core as _core
from lightstore.compat import deco as _deco
from lightstore.compat import either as _either
from lightstore.compat import fetch as _fetch
from lightstore.compat import lens as _lens
from lightstore.compat import repl as _repl
from lightstore.compat import types as _types
from lightstore.compat import utils as _utils
from lightstore.compat.autostage import autostage
from lightstore.compat.bashlike import *  # noqa: F403
from lightstore.compat.build import *  # noqa: F403
from lightstore.compat.core import *  # noqa: F403
from lightstore.compat.deco import *  # noqa: F403
from lightstore.compat.either import *  # noqa: F403
from lightstore.compat.exchange import copy_closure, spack, sunpack
from lightstore.compat.fetch import *  # noqa: F403
from lightstore.compat.housekeeping import (
    catref,
    diff,
    du,
    find,
    linkdref,
    linkrref,
    lsref,
    rmref,
    store_gc,
)
from lightstore.compat.lens import *  # noqa: F403
from lightstore.compat.lens import Attrs, Lens, mklens
from lightstore.compat.matchers import (
    match,
    match_all,
    match_exact,
    match_latest,
    match_only,
    match_some,
)
from lightstore.compat.queries import (
    alldrefs,
    allrrefs,
    dref2path,
    drefcfg,
    drefcfg_,
    drefdeps,
    drefdeps1,
    drefrrefs,
    drefrrefsC,
    path2dref,
    path2rref,
    rootdrefs,
    rootrrefs,
    rref2path,
    rrefctx,
    rrefdeps,
    rrefdeps1,
)
from lightstore.compat.realize import (
    realize,
    realize1,
    realize_closure,
    realized,
    realizeMany,
    redefine,
)
from lightstore.compat.registry import Closure, Derivation, Registry, instantiate, mkdrv
from lightstore.compat.repl import *  # noqa: F403
from lightstore.compat.stages import fetchlocal, fetchurl, mkfile, mknode
from lightstore.compat.storage import current_registry, current_storage, fsinit, mkregistry, mkSS
from lightstore.compat.types import *  # noqa: F403
from lightstore.compat.utils import *  # noqa: F403
from lightstore.compat.wrapper import (
    Build,
    BuildArgs,
    build_cattrs,
    build_config,
    build_context,
    build_deref,
    build_deref_,
    build_markstart,
    build_markstop,
    build_markstop_noexcept,
    build_metric,
    build_metrics,
    build_name,
    build_outpath,
    build_outpaths,
    build_path,
    build_paths,
    build_wrapper,
    build_wrapper_,
)
from lightstore.engine.plan import RealizeOptions
from lightstore.facade import Store
from lightstore.foundation.config import Config, cfgdict, mkconfig
from lightstore.foundation.errors import (
    AmbiguousReferenceError,
    ArchiveError,
    BuildError,
    CatalogueCorruptError,
    CatalogueVersionError,
    ChecksumError,
    DiskFullError,
    IntegrityError,
    InvalidAnnotationError,
    InvalidConfigError,
    InvalidMetricError,
    InvalidReferenceError,
    LightstoreError,
    LockTimeout,
    MatcherError,
    NotRealizedError,
    PromiseError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    UnknownReferenceError,
    UsageError,
)
from lightstore.foundation.refs import (
    Context,
    DRef,
    Name,
    Path,
    RefPath,
    RRef,
    isdref,
    isrefpath,
    isrref,
    isselfpath,
    mkdref,
    mkname,
    mkrref,
    rref2dref,
    selfref,
    undref,
    unrref,
)
from lightstore.store import StorageSettings

__version__ = "0.1.0"

__all__ = [
    # core
    "Store",
    "StorageSettings",
    "Registry",
    "Derivation",
    "Closure",
    "RealizeOptions",
    "realize_closure",
    "Config",
    # references
    "DRef",
    "RRef",
    "RefPath",
    "Name",
    "Path",
    "Context",
    "selfref",
    "isdref",
    "isrref",
    "isrefpath",
    "mkdref",
    "mkrref",
    "undref",
    "unrref",
    "rref2dref",
    # storage
    "mkSS",
    "fsinit",
    "current_storage",
    "current_registry",
    "mkregistry",
    # registry and stages
    "mkconfig",
    "cfgdict",
    "mkdrv",
    "instantiate",
    "realize",
    "realize1",
    "realizeMany",
    "redefine",
    "realized",
    "Build",
    "build_wrapper",
    "build_outpath",
    "build_outpaths",
    "build_path",
    "build_paths",
    "build_cattrs",
    "build_config",
    "build_context",
    "build_deref",
    "build_deref_",
    "build_metric",
    "build_metrics",
    "build_name",
    # matchers
    "match",
    "match_all",
    "match_only",
    "match_some",
    "match_latest",
    "match_exact",
    # decorator and lenses
    "autostage",
    "Attrs",
    "Lens",
    "mklens",
    # queries
    "alldrefs",
    "allrrefs",
    "drefrrefs",
    "drefrrefsC",
    "rootdrefs",
    "rootrrefs",
    "drefdeps",
    "drefdeps1",
    "rrefdeps",
    "rrefdeps1",
    "drefcfg",
    "drefcfg_",
    "rrefctx",
    "rref2path",
    "dref2path",
    "path2rref",
    "path2dref",
    # housekeeping and exchange
    "store_gc",
    "rmref",
    "linkrref",
    "linkdref",
    "lsref",
    "catref",
    "du",
    "find",
    "diff",
    "spack",
    "sunpack",
    "copy_closure",
    # built-in stages
    "mknode",
    "mkfile",
    "fetchurl",
    "fetchlocal",
    # errors
    "LightstoreError",
    "InvalidConfigError",
    "InvalidAnnotationError",
    "InvalidMetricError",
    "InvalidReferenceError",
    "UnknownReferenceError",
    "StoreError",
    "StoreNotFoundError",
    "StoreReadOnlyError",
    "DiskFullError",
    "CatalogueVersionError",
    "CatalogueCorruptError",
    "BuildError",
    "PromiseError",
    "MatcherError",
    "NotRealizedError",
    "IntegrityError",
    "ArchiveError",
    "ChecksumError",
    "LockTimeout",
    "UsageError",
    "AmbiguousReferenceError",
    # more of Pylightnix
    "BuildArgs",
    "build_wrapper_",
    "build_markstart",
    "build_markstop",
    "build_markstop_noexcept",
    "isselfpath",
    "mkname",
]
for _module in (_types, _utils, _core, _build, _lens, _deco, _bashlike, _fetch, _either, _repl):
    __all__ += [n for n in _module.__all__ if n not in __all__]
del _module

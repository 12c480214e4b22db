"""The exception classes: every one the package defines survives pickle and a process pool
with its message and attributes (the classes are found by introspection, so a new one is
covered without editing this file)."""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import pickle
import pkgutil
import socket
import types
import typing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lightstore
from lightstore.foundation.errors import BuildError, LightstoreError


def _modules() -> list[types.ModuleType]:
    found = [lightstore]
    for info in pkgutil.walk_packages(lightstore.__path__, "lightstore."):
        if info.name.endswith("__main__"):
            continue  # running it would start a program
        try:
            found.append(importlib.import_module(info.name))
        except ImportError as e:  # an optional extra that is not installed
            if "lightstore" in str(e):
                raise
    return found


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in the package."""
    classes = {
        value
        for module in _modules()
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__.startswith("lightstore")
    }
    return sorted(classes, key=lambda c: (c.__module__, c.__qualname__))


def _sample(kind: Any, name: str) -> Any:
    """A value of the annotated type `kind` for the parameter `name`."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in typing.get_args(kind) if a is not type(None)), name)
    if hasattr(kind, "__supertype__"):  # NewType, such as DRef
        return _sample(kind.__supertype__, name)
    if origin is list:
        return [_sample(typing.get_args(kind)[0], name), _sample(typing.get_args(kind)[0], name)]
    if origin is dict:
        key, value = typing.get_args(kind)
        return {_sample(key, name): _sample(value, name)}
    if kind is int:
        return 7
    if kind is float:
        return 1.5
    if kind is bool:
        return True
    if isinstance(kind, type) and issubclass(kind, BaseException):
        return ValueError(f"the {name}")
    return f"{name} value"  # str, Any


def make_instance(cls: type[BaseException]) -> BaseException:
    """An instance of `cls` with every constructor argument given (so every attribute is set)."""
    if not inspect.isfunction(cls.__init__):  # the built-in constructor: a message
        return cls(f"{cls.__name__} happened")
    hints = typing.get_type_hints(cls.__init__)
    arguments = {
        name: _sample(hints.get(name, Any), name)
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self"
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    return cls(**arguments)


def comparable(value: Any) -> Any:
    """`value` with exceptions (which compare by identity) turned into what they hold."""
    if isinstance(value, BaseException):
        return (type(value), str(value), comparable(value.args), comparable(vars(value)))
    if isinstance(value, dict):
        return {comparable(k): comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(comparable(v) for v in value)
    return value


def _raise(error: BaseException) -> None:
    raise error


CLASSES = exception_classes()


def test_introspection_finds_the_exception_classes():
    names = {c.__name__ for c in CLASSES}
    assert {"LightstoreError", "BuildError", "PromiseError", "BuildsFailed", "CliError"} <= names
    assert len(CLASSES) >= 30


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_exception_survives_pickle(cls):
    error = make_instance(cls)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(error, protocol))
        assert comparable(copy) == comparable(error)


def test_every_exception_crosses_a_process_pool():
    """Sent to a fresh interpreter (spawn) and raised back from it, each arrives intact."""
    errors = [make_instance(cls) for cls in CLASSES]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_raise, error) for error in errors]
        for error, future in zip(errors, futures, strict=True):
            got = future.exception(timeout=120)
            assert comparable(got) == comparable(error)


def test_an_attribute_that_cannot_be_pickled_travels_as_text():
    with socket.socket() as sock:
        cause = OSError("a realizer's error holding a socket")
        cause.sock = sock  # type: ignore[attr-defined]
        error = BuildError("the realizer of dref:x raised OSError", "dref:x", cause, S=sock)
        copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.dref == "dref:x"
    assert isinstance(copy.cause, Exception) and "holding a socket" in str(copy.cause)
    assert isinstance(copy.S, str) and "socket" in copy.S


@given(message=st.text(), extra=st.lists(st.text(), max_size=3))
def test_messages_and_attributes_of_any_text_survive(message, extra):
    from lightstore.foundation.errors import AmbiguousReferenceError

    error = AmbiguousReferenceError(message, extra)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.candidates, copy.args) == (str(error), extra, error.args)
    assert isinstance(copy, LightstoreError) and isinstance(copy, ValueError)


class TwoArguments(Exception):
    """A realizer's own exception whose __init__ takes other arguments than its args: it
    pickles, but unpickling calls TwoArguments(message) and fails."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def _realize_failing(root: str) -> None:
    from lightstore import build_wrapper, instantiate, match_only, mkdrv, mkSS, realize1

    def real(b):
        raise TwoArguments(1, 2)

    realize1(
        instantiate(
            lambda r: mkdrv({"name": "two"}, match_only(), build_wrapper(real), r), S=mkSS(root)
        )
    )


def _round_trips() -> list[tuple[str, str]]:
    """Pickle and load errors holding a TwoArguments; the type and text of what they hold.

    Run in a fresh interpreter: tblib, which other tests load (Datasette, Dask), makes every
    exception class loadable from then on."""
    from lightstore.engine.plan import BuildsFailed

    failures: dict[Any, BaseException] = {"dref:" + "a" * 32 + "-x": TwoArguments(1, 2)}
    out = []
    for error in (
        BuildError("the realizer raised TwoArguments", "dref:x", TwoArguments(1, 2)),
        BuildsFailed("one build failed", failures),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert str(copy) == str(error) and type(copy) is type(error)
        out.append((type(copy.cause).__name__, str(copy.cause)))
    out += [(type(e).__name__, str(e)) for e in copy.failures.values()]
    return out


def test_an_attribute_that_pickles_but_does_not_load_travels_as_text():
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        found = pool.submit(_round_trips).result(timeout=120)
    assert found == [("Exception", "TwoArguments: 1/2")] * 3


def test_a_realizer_error_that_does_not_unpickle_crosses_a_process_pool(tmp_path):
    """Raised in a worker, it comes back as the BuildError (the pool is not broken)."""
    root = str(tmp_path / "store")
    lightstore.fsinit(lightstore.mkSS(root))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = pool.submit(_realize_failing, root).exception(timeout=120)
    assert isinstance(got, BuildError) and "TwoArguments: 1/2" in str(got.cause)

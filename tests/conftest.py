"""Shared fixtures: every test gets its own real store in a tmp folder."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import lightstore
from lightstore.defaults import current

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def store(tmp_path) -> lightstore.Store:
    """A fresh store in a tmp folder."""
    return lightstore.fsinit(lightstore.mkSS(str(tmp_path / "store")))


@pytest.fixture
def S(store) -> lightstore.StorageSettings:
    """Storage settings of the fresh store."""
    return store.settings


@pytest.fixture(autouse=True)
def _isolated_default_store(tmp_path, monkeypatch):
    """No test touches the user's default store or leaks a current registry."""
    monkeypatch.setenv("LIGHTSTORE_ROOT", str(tmp_path / "default-store"))
    current.storage = None
    current.registry = None
    yield
    current.storage = None
    current.registry = None

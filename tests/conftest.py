"""Shared fixtures: every test gets its own real store in a tmp folder; the sample pipeline,
child processes (always reaped), a small disk and a real S3 endpoint when asked."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess

import pytest
from helpers import Pipeline, Workers, build_pipeline
from hypothesis import HealthCheck, settings

import lightstore
from lightstore.compat.current import current

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


@pytest.fixture
def pipeline(S) -> Pipeline:
    """The sample pipeline (data <- train(lr) x3, eval <- train(0.01)) realized in the store."""
    return build_pipeline(S)


@pytest.fixture
def workers():
    """Starts child processes running jobs of tests/workers.py; kills and reaps every one
    still running when the test ends."""
    started = Workers()
    try:
        yield started
    finally:
        started.reap()


@pytest.fixture(autouse=True)
def _isolated_default_store(tmp_path, monkeypatch):
    """No test touches the user's default store or leaks a current registry."""
    monkeypatch.setenv("LIGHTSTORE_ROOT", str(tmp_path / "default-store"))
    for name in (
        "LIGHTSTORE_SIGNING_KEY",
        "LIGHTSTORE_TRUSTED_KEYS",
        "LIGHTSTORE_SUBSTITUTERS",
        "LIGHTSTORE_PUSH",
    ):
        monkeypatch.delenv(name, raising=False)
    current.storage = None
    current.registry = None
    yield
    current.storage = None
    current.registry = None


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs at tmp_path/disk, unmounted afterwards (skipped where mounting is not
    permitted)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {proc.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        for opened in set(lightstore.Store._instances.values()):
            opened.catalogue.close()
        lightstore.Store.forget_instances()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


# -- a real S3 endpoint: moto's server on 127.0.0.1 ------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto S3 server for the session, on 127.0.0.1 and a free port."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch) -> dict[str, str]:
    """AWS variables pointing at moto, set for this test only (and its child processes)."""
    s3fs = pytest.importorskip("s3fs")
    env = {
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-access-key",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # fsspec caches filesystem instances by their options: start from a clean one.
    s3fs.S3FileSystem.clear_instance_cache()
    yield env
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_url(aws_env) -> str:
    """A fresh bucket on the moto server, as an s3:// remote URL."""
    import s3fs

    bucket = f"lightstore-{secrets.token_hex(4)}"
    fs = s3fs.S3FileSystem()
    fs.call_s3("create_bucket", Bucket=bucket)
    return f"s3://{bucket}/cache"

"""Shared fixtures: small generated videos and the read-only real data in ``../shared/data``."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# the read-only real data: <repo>/../shared/data, or wherever SAV_SHARED_DATA points
SHARED_DATA = Path(os.environ.get("SAV_SHARED_DATA") or (REPO_ROOT / ".." / "shared" / "data")).resolve()
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared test data not found at {SHARED_DATA}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (videos/, sav_example/): read-only, never copy it into the repo."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """Factory writing a small H.264 video of moving textured shapes; returns its Path.

    ``make_video(path, seconds=2.0, fps=24, width=320, height=240, seed=0, **knobs)`` where the knobs are
    those of ``sav_assets.lib.ingest.demo.write_synthetic_video``: ``static``, ``blur``, ``brightness``, ``shake``,
    ``crf``, ``preset``, ``gop``, ``faststart``, ``rotation``, ``audio``, ``codec``. The container follows
    the suffix of ``path`` (.mp4, .mkv, .mov, ...). ``path=None`` writes into a fresh temporary folder.
    Identical requests are encoded once per session and copied afterwards.
    """
    from sav_assets.lib.ingest.demo import write_synthetic_video

    cache_dir = tmp_path_factory.mktemp("video_cache")
    cache: dict = {}

    def _make(path=None, seconds: float = 2.0, fps: float = 24, width: int = 320, height: int = 240,
              seed: int = 0, **knobs) -> Path:
        suffix = Path(path).suffix if path is not None else ".mp4"
        key = (suffix, float(seconds), float(fps), int(width), int(height), int(seed),
               tuple(sorted(knobs.items())))
        if key not in cache:
            src = cache_dir / f"video_{len(cache)}{suffix}"
            write_synthetic_video(src, seconds, fps, width, height, seed, **knobs)
            cache[key] = src
        if path is None:
            path = tmp_path_factory.mktemp("video") / f"video{suffix}"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache[key], path)
        return path

    return _make


@pytest.fixture(autouse=True)
def _forget_closed_dagster_instances():
    """Dagster keeps the defs-state storage of the last instance it saw in a context variable; once a
    test's `instance_for_test` closes, later definition loads in the same process would trip over the
    dead instance. Reset it around every test (the product's processes keep one live instance)."""
    try:
        from dagster._core.storage.defs_state import base
    except ImportError:  # pragma: no cover
        yield
        return
    base._current_storage.set(None)
    yield
    base._current_storage.set(None)


# ---- a real S3 endpoint: moto's HTTP server on loopback ----------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_endpoint(monkeypatch, tmp_path):
    """``AWS_ENDPOINT_URL`` (and test credentials) pointing at a fresh moto S3 server; yields the URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
                 "DAGSTER_HOME": str(tmp_path / "dh")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield url
    server.stop()

"""SAM 2 model building and checkpoint loading, with the real sam2 code (tiny 2.1, random weights, CPU)."""

from __future__ import annotations

import hashlib
import logging

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from sav_assets.lib.label import model as sm  # noqa: E402
from sav_assets.lib.label.model import CheckpointRefused, ModelSpec, load_model, save_checkpoint  # noqa: E402

SMALL = {"config": "tiny", "image_size": 256, "device": "cpu"}


class NotATensor:
    """A custom class: pickling it stores a reference to code, which weights_only loading refuses."""

    def __init__(self):
        self.payload = [1, 2, 3]


@pytest.fixture(scope="module")
def loaded():
    return load_model(ModelSpec(**SMALL))


@pytest.fixture(scope="module")
def ckpt(loaded, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_tiny_random.pt"
    sha = save_checkpoint(loaded.model, path)
    return path, sha


def test_resolve_config_names():
    assert sm.resolve_config("tiny") == ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny")
    assert sm.resolve_config("base+") == sm.resolve_config("base_plus")
    assert sm.resolve_config("base+")[1] == "sam2.1_hiera_base_plus"
    assert sm.resolve_config("large")[1] == "sam2.1_hiera_large"
    assert sm.resolve_config("configs/sam2/sam2_hiera_s.yaml")[1] == "sam2_hiera_small"
    with pytest.raises(ValueError, match="unknown SAM 2 config"):
        sm.resolve_config("huge")


def test_image_size_overrides_validated():
    assert sm.image_size_overrides(None) == []
    ov = sm.image_size_overrides(512)
    assert "++model.image_size=512" in ov
    assert any("feat_sizes=[32,32]" in o for o in ov)
    for bad in (250, 48, 1000):
        with pytest.raises(ValueError, match="multiple of 32"):
            sm.image_size_overrides(bad)


def test_random_weights_warn_and_describe(caplog):
    with caplog.at_level(logging.WARNING, logger="sav_assets.lib.label.model"):
        lm = load_model(ModelSpec(**SMALL))
    assert "RANDOM WEIGHTS" in caplog.text
    assert lm.random_weights is True and lm.checkpoint_sha256 is None
    assert lm.model_name == "sam2.1_hiera_tiny" and lm.image_size == 256
    assert lm.video_predictor is lm.model and type(lm.model).__name__ == "SAM2VideoPredictor"
    assert lm.model.image_size == 256 and lm.model.sam_image_embedding_size == 16
    assert len(lm.config_sha256) == 64
    assert lm.precision == "fp32"
    with lm.autocast():
        pass
    d = sm.describe(lm)
    assert d["random_weights"] is True and d["image_size"] == 256


def test_config_sha_depends_on_overrides(loaded):
    other = load_model(ModelSpec(config="tiny", image_size=512, device="cpu"))
    assert other.config_sha256 != loaded.config_sha256
    # same spec -> same hash, and seeded random init -> same weights
    again = load_model(ModelSpec(**SMALL))
    assert again.config_sha256 == loaded.config_sha256
    k = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(again.model.state_dict()[k], loaded.model.state_dict()[k])


def test_checkpoint_round_trip_with_pin(loaded, ckpt):
    path, sha = ckpt
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model"}
    # a different seed gives different random weights; loading the checkpoint must restore ours
    lm = load_model(ModelSpec(**SMALL, seed=123, checkpoint=str(path), checkpoint_sha256=sha.upper()))
    assert lm.random_weights is False and lm.checkpoint_sha256 == sha
    a, b = loaded.model.state_dict(), lm.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_pin_mismatch_refused(ckpt):
    path, _ = ckpt
    with pytest.raises(CheckpointRefused, match="SHA-256"):
        load_model(ModelSpec(**SMALL, checkpoint=str(path), checkpoint_sha256="0" * 64))


def test_checkpoint_with_pickled_code_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": NotATensor()}, p)
    with pytest.raises(CheckpointRefused, match="pickled"):
        load_model(ModelSpec(**SMALL, checkpoint=str(p)))


def test_checkpoint_key_mismatch_and_corrupt_refused(loaded, tmp_path):
    sd = {k: v for k, v in loaded.model.state_dict().items()}
    dropped = sorted(sd)[0]
    del sd[dropped]
    sd["not_a_sam2_key"] = torch.zeros(1)
    p = tmp_path / "keys.pt"
    torch.save({"model": sd}, p)
    with pytest.raises(CheckpointRefused, match="1 missing keys") as ei:
        load_model(ModelSpec(**SMALL, checkpoint=str(p)))
    assert dropped in str(ei.value) and "not_a_sam2_key" in str(ei.value)

    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CheckpointRefused, match="unreadable"):
        load_model(ModelSpec(**SMALL, checkpoint=str(bad)))
    with pytest.raises(CheckpointRefused, match="not found"):
        load_model(ModelSpec(**SMALL, checkpoint=str(tmp_path / "missing.pt")))
    fmt = tmp_path / "fmt.pt"
    torch.save({"state": 1}, fmt)
    with pytest.raises(CheckpointRefused, match="format"):
        load_model(ModelSpec(**SMALL, checkpoint=str(fmt)))


@pytest.mark.s3
def test_s3_checkpoint_is_downloaded_once_into_cache(tmp_path, monkeypatch):
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        port = server._server.server_port
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        body = b"small stand-in for a checkpoint"
        s3.put_object(Bucket="models", Key="sam2/v1/sam2.1_tiny.pt", Body=body)
        uri = "s3://models/sam2/v1/sam2.1_tiny.pt"
        p1 = sm.fetch_checkpoint(uri, cache_dir=str(tmp_path / "cache"))
        assert open(p1, "rb").read() == body
        assert p1.startswith(str(tmp_path / "cache")) and p1.endswith("sam2.1_tiny.pt")
        p2 = sm.fetch_checkpoint(uri, cache_dir=str(tmp_path / "cache"))
        assert p2 == p1
        with pytest.raises(CheckpointRefused, match="cannot read S3 checkpoint"):
            sm.fetch_checkpoint("s3://models/missing.pt", cache_dir=str(tmp_path / "cache"))
    finally:
        server.stop()


def test_module_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys; import sav_assets.lib.label.model, sav_assets.lib.label.labeler, sav_assets.lib.video.decode, "
            "sav_assets.lib.label.prompts, sav_assets.lib.label.overlay; "
            "bad = [m for m in ('torch', 'sam2', 'decord', 'dagster') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

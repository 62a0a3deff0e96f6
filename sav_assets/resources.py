"""Dagster resources: the lake, the video source and the SAM 2 model.

Configuration comes from environment variables, resolved when a run (or sensor tick) uses the
resource, never at import time: an unset variable falls back to the documented default.
"""

from __future__ import annotations

import os
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from sav_assets.lib.store.lake import Lake, S3Settings


def _env(value: Optional[str], var: str, default: Optional[str] = None) -> Optional[str]:
    if value not in (None, ""):
        return value
    return os.environ.get(var) or default


def _s3_settings(endpoint_url: Optional[str], region: Optional[str]) -> S3Settings:
    base = S3Settings.from_env()
    return S3Settings(endpoint_url=endpoint_url or base.endpoint_url, region_name=region or base.region_name)


def _s3_client(settings: S3Settings):
    # boto3 through dagster-aws, honouring AWS_ENDPOINT_URL for S3-compatible stores.
    from dagster_aws.s3 import S3Resource

    return S3Resource(endpoint_url=settings.endpoint_url, region_name=settings.region_name).get_client()


class LakeResource(dg.ConfigurableResource):
    """Where tables, exports and shards are written: a local path or ``s3://bucket/prefix``."""

    root: Optional[str] = None            # default: $SAV_DATA_ROOT or ./data
    endpoint_url: Optional[str] = None    # default: $AWS_ENDPOINT_URL
    region_name: Optional[str] = None

    _lake: Optional[Lake] = PrivateAttr(default=None)

    @property
    def root_uri(self) -> str:
        return _env(self.root, "SAV_DATA_ROOT", "./data")

    def lake(self) -> Lake:
        if self._lake is None:
            root = self.root_uri
            if root.startswith("s3://"):
                s3 = _s3_settings(self.endpoint_url, self.region_name)
                self._lake = Lake(root, s3=s3, s3_client=_s3_client(s3))
            else:
                self._lake = Lake(root)
        return self._lake


class SourceResource(dg.ConfigurableResource):
    """Where raw videos land: a local folder or ``s3://bucket/prefix``."""

    uri: Optional[str] = None             # default: $SAV_SOURCE_URI or ./incoming
    settle_seconds: float = 30.0          # local files modified more recently are still being copied
    endpoint_url: Optional[str] = None
    region_name: Optional[str] = None

    @property
    def source_uri(self) -> str:
        return _env(self.uri, "SAV_SOURCE_URI", "./incoming")

    def source(self, uri: Optional[str] = None):
        from sav_assets.lib.store.source import Source

        uri = uri or self.source_uri
        if uri.startswith("s3://"):
            s3 = _s3_settings(self.endpoint_url, self.region_name)
            return Source(uri, s3=s3, s3_client=_s3_client(s3))
        return Source(uri)


class SAM2Resource(dg.ConfigurableResource):
    """The SAM 2.1 model used for pseudo-labeling (random weights when no checkpoint is given)."""

    config: Optional[str] = None          # tiny | small | base_plus | large; $SAV_SAM2_CONFIG, default tiny
    checkpoint: Optional[str] = None      # local path or s3:// URI; $SAV_SAM2_CHECKPOINT
    checkpoint_sha256: Optional[str] = None  # $SAV_SAM2_CHECKPOINT_SHA256
    device: Optional[str] = None          # auto | cuda | cpu; $SAV_DEVICE, default auto
    image_size: Optional[int] = None      # input-size override (CPU smoke runs); $SAV_SAM2_IMAGE_SIZE
    bf16: bool = True
    compile: bool = False

    _loaded = PrivateAttr(default=None)

    def spec(self):
        from sav_assets.lib.label.model import ModelSpec

        size = self.image_size or (int(os.environ["SAV_SAM2_IMAGE_SIZE"]) if os.environ.get("SAV_SAM2_IMAGE_SIZE") else None)
        return ModelSpec(
            config=_env(self.config, "SAV_SAM2_CONFIG", "tiny"),
            checkpoint=_env(self.checkpoint, "SAV_SAM2_CHECKPOINT"),
            checkpoint_sha256=_env(self.checkpoint_sha256, "SAV_SAM2_CHECKPOINT_SHA256"),
            device=_env(self.device, "SAV_DEVICE", "auto"),
            image_size=size, bf16=self.bf16, compile=self.compile,
        )

    def load(self):
        if self._loaded is None:
            from sav_assets.lib.label.model import load_model

            self._loaded = load_model(self.spec())
        return self._loaded


def default_resources() -> dict:
    return {"lake": LakeResource(), "source": SourceResource(), "sam2": SAM2Resource()}

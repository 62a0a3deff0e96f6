"""Dagster resources: the lake, the video source and the SAM 2 model; and every ``SAV_*`` variable.

This module is the one place the project's environment variables are read. Resources resolve them
when a run (or sensor tick) uses the resource, never at import time; an unset variable falls back to
the documented default (README, "Configuration"). Two values are read when the definitions are built
(``sav_assets.definitions.build_definitions``), because they are part of a definition rather than of
a run: the schedule's cron (``ingest_cron``: ``SAV_INGEST_CRON``) and the SAM 2 spec that
``masklets``' code_version is derived from (``SAM2Resource.spec``).

    SAV_DATA_ROOT, AWS_ENDPOINT_URL     LakeResource
    SAV_SOURCE_URI, SAV_PROMPTS_URI     SourceResource
    SAV_SAM2_CONFIG, SAV_SAM2_CHECKPOINT, SAV_SAM2_CHECKPOINT_SHA256, SAV_DEVICE, SAV_SAM2_IMAGE_SIZE,
    SAV_CHECKPOINT_CACHE, SAV_SAM2_TRACKING
                                        SAM2Resource (a model promoted in the lake's models table
                                        takes the place of SAV_SAM2_CONFIG/_CHECKPOINT/_IMAGE_SIZE/_TRACKING)
    SAV_INGEST_CRON                     ingest_cron()
    SAV_RAY_ADDRESS, SAV_SHARED_FS, SAV_RAY_MAX_RETRIES, RAY_AUTH_MODE
                                        cluster_settings() (read by a step when it runs)
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from sav_assets.lib.label.model import ModelSpec
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.objects import S3Settings

DEFAULT_DATA_ROOT = "./data"
DEFAULT_SOURCE_URI = "./incoming"
DEFAULT_INGEST_CRON = "0 2 * * *"


def _env(value: str | None, var: str, default: str | None = None) -> str | None:
    """An explicit resource value, else the environment variable (read now), else the default."""
    if value not in (None, ""):
        return value
    return dg.EnvVar(var).get_value() or default


def ingest_cron() -> str:
    """The nightly schedule's cron: ``$SAV_INGEST_CRON`` or 02:00 every day (read when definitions are built)."""
    return _env(None, "SAV_INGEST_CRON", DEFAULT_INGEST_CRON)


def _s3_settings(endpoint_url: str | None, region: str | None) -> S3Settings:
    """Endpoint and region (configured, else the standard AWS variables); in Dagster runs the boto3
    client itself comes from dagster-aws's ``S3Resource``, built only when an S3 path is used."""
    from dagster_aws.s3 import S3Resource

    base = S3Settings.from_env()
    endpoint, region = endpoint_url or base.endpoint_url, region or base.region_name
    return S3Settings(endpoint_url=endpoint, region_name=region,
                      client_factory=S3Resource(endpoint_url=endpoint, region_name=region).get_client)


def cluster_settings():
    """Where fan-out steps run: ``$SAV_RAY_ADDRESS`` unset in-process, ``local`` an embedded Ray,
    ``host:port`` a cluster; ``$SAV_SHARED_FS=1`` declares local roots shared by every node;
    ``$RAY_AUTH_MODE`` (default ``disabled``) is passed to Ray explicitly."""
    from sav_assets.lib.cluster.runner import ClusterSettings

    retries = _env(None, "SAV_RAY_MAX_RETRIES")
    return ClusterSettings(address=_env(None, "SAV_RAY_ADDRESS") or None,
                           shared_fs=(_env(None, "SAV_SHARED_FS") or "").lower() in ("1", "true", "yes"),
                           max_retries=int(retries) if retries else ClusterSettings.max_retries,
                           auth_mode=_env(None, "RAY_AUTH_MODE", ClusterSettings.auth_mode))


def _portable_s3(endpoint_url: str | None, region: str | None) -> S3Settings:
    """The same endpoint and region without the orchestrator's client factory: picklable, for workers
    on other machines (their boto3 chain supplies the credentials)."""
    s = _s3_settings(endpoint_url, region)
    return S3Settings(endpoint_url=s.endpoint_url, region_name=s.region_name)


class LakeResource(dg.ConfigurableResource):
    """Where tables, exports and shards are written: a local path or ``s3://bucket/prefix``."""

    root: str | None = Field(default=None, description="local path or s3://bucket/prefix; unset: "
                                "$SAV_DATA_ROOT, else ./data")
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint; unset: $AWS_ENDPOINT_URL")
    region_name: str | None = Field(default=None, description="S3 region; unset: the AWS variables")

    _lake: Lake | None = PrivateAttr(default=None)

    @property
    def root_uri(self) -> str:
        return _env(self.root, "SAV_DATA_ROOT", DEFAULT_DATA_ROOT)

    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake(self.root_uri, s3=_s3_settings(self.endpoint_url, self.region_name))
        return self._lake

    def lake_factory(self):
        """A picklable ``() -> Lake`` for Ray workers."""
        import functools

        return functools.partial(Lake, self.root_uri, s3=_portable_s3(self.endpoint_url, self.region_name))


class SourceResource(dg.ConfigurableResource):
    """Where raw videos land: a local folder or ``s3://bucket/prefix``."""

    uri: str | None = Field(default=None, description="local folder or s3://bucket/prefix; unset: "
                               "$SAV_SOURCE_URI, else ./incoming")
    settle_seconds: float = Field(default=30.0, description="local files modified more recently than this are "
                                  "still being copied and wait for a later tick")
    prompts_uri: str | None = Field(default=None, description="point/box prompts file (JSONL/CSV/JSON) for "
                                       "prompted masklets; unset: $SAV_PROMPTS_URI, else none")
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint; unset: $AWS_ENDPOINT_URL")
    region_name: str | None = Field(default=None, description="S3 region; unset: the AWS variables")

    @property
    def source_uri(self) -> str:
        return _env(self.uri, "SAV_SOURCE_URI", DEFAULT_SOURCE_URI)

    @property
    def default_prompts_uri(self) -> str | None:
        return _env(self.prompts_uri, "SAV_PROMPTS_URI")

    def source(self, uri: str | None = None):
        """The landing zone at ``uri`` (default: the configured one) with this resource's S3 endpoint,
        region and credentials; also the factory that opens source videos (``SourceOpener(source.source)``)."""
        from sav_assets.lib.store.source import Source

        return Source(uri or self.source_uri, s3=_s3_settings(self.endpoint_url, self.region_name))

    def source_factory(self):
        """A picklable ``folder URI -> Source`` for Ray workers."""
        import functools

        from sav_assets.lib.store.source import Source

        return functools.partial(Source, s3=_portable_s3(self.endpoint_url, self.region_name))


class SAM2Resource(dg.ConfigurableResource):
    """The SAM 2.1 model used for pseudo-labeling (random weights when no checkpoint is given)."""

    config: str | None = Field(default=None, description="tiny | small | base_plus | large; unset: "
                                  "$SAV_SAM2_CONFIG, else tiny")
    checkpoint: str | None = Field(default=None, description="local path or s3:// URI; unset: "
                                      "$SAV_SAM2_CHECKPOINT, else random weights")
    checkpoint_sha256: str | None = Field(default=None, description="refuse a checkpoint with another "
                                             "SHA-256; unset: $SAV_SAM2_CHECKPOINT_SHA256")
    device: str | None = Field(default=None, description="auto | cuda | cuda:N | cpu; unset: $SAV_DEVICE, else auto")
    image_size: int | None = Field(default=None, description="input-size override (CPU smoke runs); unset: "
                                      "$SAV_SAM2_IMAGE_SIZE, else the model's")
    checkpoint_cache: str | None = Field(default=None, description="where s3:// checkpoints are cached; "
                                            "unset: $SAV_CHECKPOINT_CACHE, else ~/.cache/sav-assets/checkpoints")
    tracking: str | None = Field(default=None, description="multimask (sam2's default) | single: ONE mask per "
                                 "object on propagated frames, for a checkpoint fine-tuned that way; unset: "
                                 "$SAV_SAM2_TRACKING, else multimask (a promoted model: the way it was trained)")
    bf16: bool = Field(default=ModelSpec.bf16, description="bfloat16 autocast (CUDA only)")
    compile: bool = Field(default=ModelSpec.compile, description="torch.compile the image encoder (CUDA only)")
    use_registry: bool = Field(default=True, description="label with the promoted model of the lake's models "
                               "table when there is one (sav-assets models promote)")
    registry_root: str | None = Field(default=None, description="lake whose models table is read; unset: "
                                         "$SAV_DATA_ROOT, else ./data")

    _loaded = PrivateAttr(default=None)

    def spec(self) -> ModelSpec:
        """The model to load, with every unset value resolved from the environment now (no torch import)."""
        size = self.image_size or _env(None, "SAV_SAM2_IMAGE_SIZE")
        promoted = self.promoted_model()
        if promoted is not None:   # the models table's promoted checkpoint, pinned by its SHA-256
            from sav_assets.lib.train.registry import model_spec

            return model_spec(promoted, device=_env(self.device, "SAV_DEVICE", ModelSpec.device), bf16=self.bf16,
                              compile=self.compile, cache_dir=_env(self.checkpoint_cache, "SAV_CHECKPOINT_CACHE"))
        return ModelSpec(
            config=_env(self.config, "SAV_SAM2_CONFIG", ModelSpec.config),
            checkpoint=_env(self.checkpoint, "SAV_SAM2_CHECKPOINT"),
            checkpoint_sha256=_env(self.checkpoint_sha256, "SAV_SAM2_CHECKPOINT_SHA256"),
            device=_env(self.device, "SAV_DEVICE", ModelSpec.device),
            image_size=int(size) if size else None, bf16=self.bf16, compile=self.compile,
            cache_dir=_env(self.checkpoint_cache, "SAV_CHECKPOINT_CACHE"),
            multimask_tracking=self._multimask_tracking(),
        )

    def _multimask_tracking(self) -> bool:
        value = _env(self.tracking, "SAV_SAM2_TRACKING", "multimask").strip().lower()
        if value not in ("multimask", "single"):
            raise ValueError(f"SAV_SAM2_TRACKING / sam2.tracking must be 'multimask' or 'single', got {value!r}")
        return value == "multimask"

    def promoted_model(self) -> dict | None:
        """The models-table row of the promoted model (lib/train/registry.py), or None."""
        if not self.use_registry:
            return None
        from sav_assets.lib.train.registry import current_labeling_model

        root = _env(self.registry_root, "SAV_DATA_ROOT", DEFAULT_DATA_ROOT)
        return current_labeling_model(Lake(root, s3=_s3_settings(None, None)))

    def load(self):
        if self._loaded is None:
            from sav_assets.lib.label.model import load_model

            self._loaded = load_model(self.spec())
        return self._loaded


def default_resources() -> dict:
    return {"lake": LakeResource(), "source": SourceResource(), "sam2": SAM2Resource()}

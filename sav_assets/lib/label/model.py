"""Build a SAM 2(.1) model from sam2's own hydra configs and load a checkpoint safely.

``load_model(ModelSpec(...))`` builds ``SAM2VideoPredictor`` (a ``SAM2Base``) from the packaged
config with ``ckpt_path=None`` and then loads the checkpoint itself:

* the file is a local path or an ``s3://bucket/key`` URI (downloaded once into a local cache keyed by
  the object's ETag; ``AWS_ENDPOINT_URL`` is honoured, so S3-compatible stores work);
* its SHA-256 is computed and, when ``checkpoint_sha256`` pins a value, a mismatch is refused;
* ``torch.load(..., weights_only=True)``: a checkpoint that carries pickled Python objects or code is
  refused with :class:`CheckpointRefused`;
* the official layout ``{"model": state_dict}`` (a bare state dict is accepted too) is loaded with a
  strict key check and a readable message on mismatch.

Without a checkpoint the weights are random (seeded, so runs are reproducible) and a loud WARNING
says the masks are meaningless: this is what the CPU tests and smoke benchmarks use.

Heavy imports (torch, sam2, hydra) happen inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sav_assets.lib.util import replacing, sha256_bytes, sha256_file, sha256_text

log = logging.getLogger(__name__)

SAM2_CONFIGS: dict[str, str] = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "base+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
_SIZE_NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}

# The hydra overrides sam2's build_sam2_video_predictor(apply_postprocessing=True) adds itself; they
# are part of what defines the model's behaviour, so they are hashed into config_sha256 as well.
_PREDICTOR_POSTPROCESSING = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=8",
]


# What single-mask tracking changes, as the equivalent hydra settings (hashed into config_sha256; the
# predictor's post-processing above would override the second one, so set_tracking sets both on the
# built model).
_SINGLE_MASK_TRACKING = [
    "++model.multimask_output_for_tracking=false",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=false",
]


class CheckpointRefused(Exception):
    """The checkpoint was not loaded: pin mismatch, pickled code, unreadable file or wrong keys."""


@dataclass
class ModelSpec:
    config: str = "tiny"                 # tiny | small | base_plus (base+) | large | configs/....yaml
    checkpoint: str | None = None        # local path or s3:// URI; None = random weights
    checkpoint_sha256: str | None = None  # optional pin (hex)
    device: str = "auto"                 # auto | cuda | cuda:N | cpu
    image_size: int | None = None        # input-size override (multiple of 32), e.g. 256 for CPU smoke runs
    bf16: bool = True                    # bfloat16 autocast (CUDA only)
    compile: bool = False                # torch.compile the image encoder (CUDA only)
    seed: int = 0                        # RNG seed for random-weight initialisation
    multimask_tracking: bool = True      # False: ONE mask per object on propagated frames (set_tracking)
    cache_dir: str | None = None         # where s3:// checkpoints are cached (default ~/.cache/sav-assets)


@dataclass
class LoadedModel:
    model: Any                           # sam2.sam2_video_predictor.SAM2VideoPredictor (a SAM2Base)
    device: str
    model_name: str
    config_path: str
    config_sha256: str
    checkpoint_sha256: str | None
    random_weights: bool
    image_size: int
    bf16: bool
    spec: ModelSpec = field(default_factory=ModelSpec)

    @property
    def video_predictor(self):
        """The SAM2VideoPredictor (same object as ``model``)."""
        return self.model

    @property
    def precision(self) -> str:
        return "bf16" if (self.bf16 and self.device.startswith("cuda")) else "fp32"

    def autocast(self):
        """bfloat16 autocast on CUDA when enabled, otherwise a no-op context."""
        if self.precision == "bf16":
            import torch

            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# config resolution


def resolve_config(config: str) -> tuple[str, str]:
    """(hydra config name relative to the sam2 package, model name such as 'sam2.1_hiera_tiny')."""
    key = config.strip()
    path = SAM2_CONFIGS.get(key) or SAM2_CONFIGS.get(key.lower())
    if path is None:
        if key.startswith("configs/") and key.endswith(".yaml"):
            path = key
        else:
            raise ValueError(
                f"unknown SAM 2 config {config!r}: use one of {sorted(SAM2_CONFIGS)} "
                "or a sam2 package config path such as 'configs/sam2.1/sam2.1_hiera_t.yaml'"
            )
    stem = Path(path).stem  # sam2.1_hiera_t
    m = re.match(r"^(.*_hiera_)(t|s|b\+|l)$", stem)
    name = f"{m.group(1)}{_SIZE_NAMES[m.group(2)]}" if m else stem
    return path, name


def _config_file(config_path: str) -> Path:
    import sam2

    p = Path(os.path.dirname(sam2.__file__)) / config_path
    if not p.is_file():
        raise ValueError(f"SAM 2 config file not found in the installed sam2 package: {config_path}")
    return p


def image_size_overrides(image_size: int | None) -> list[str]:
    """Hydra overrides for an input-size change, including the values derived from it."""
    if image_size is None:
        return []
    s = int(image_size)
    if s < 64 or s % 32:
        raise ValueError(f"image_size must be a multiple of 32 and >= 64 (SAM 2's backbone stride), got {s}")
    f = s // 16  # backbone stride 16: the memory-attention RoPE grid
    return [
        f"++model.image_size={s}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{f},{f}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{f},{f}]",
    ]


def _resolve_device(device: str) -> str:
    import torch

    d = (device or "auto").lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    if d != "cpu" and not d.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return d


# ---------------------------------------------------------------------------------------------
# checkpoints


def _cache_root(cache_dir: str | None) -> Path:
    # $SAV_CHECKPOINT_CACHE is resolved by SAM2Resource (sav_assets/resources.py) into ModelSpec.cache_dir
    root = cache_dir or os.path.join(
        os.path.expanduser("~"), ".cache", "sav-assets", "checkpoints")
    return Path(root)


def fetch_checkpoint(uri: str, cache_dir: str | None = None, expected_sha256: str | None = None,
                     s3_client=None) -> str:
    """Local path of a checkpoint: a local file as it is; an ``s3://`` object downloaded once (through
    the object store, with ``s3_client`` if given) into a cache keyed by its URI and version (ETag)."""
    from sav_assets.lib.store.objects import store_for_object

    try:
        store, key = store_for_object(uri, client=s3_client)
    except ValueError as e:
        raise CheckpointRefused(f"checkpoint URI without an object key: {uri} ({e})") from e
    if store.local_root is not None:
        p = store.local_root / key
        if not p.is_file():
            raise CheckpointRefused(f"checkpoint file not found: {uri}")
        return str(p)
    try:
        info = store.info(key)
    except Exception as e:
        raise CheckpointRefused(f"cannot read S3 checkpoint {uri}: {e}") from e
    ident = sha256_text(f"{info.uri}\0{info.version}\0{info.size}")[:24]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", key.rsplit("/", 1)[-1]) or "checkpoint.pt"
    dest_dir = _cache_root(cache_dir) / ident
    dest = dest_dir / name
    if dest.is_file() and (expected_sha256 is None or sha256_file(dest) == expected_sha256.lower()):
        log.info("using cached checkpoint %s for %s", dest, uri)
        return str(dest)
    log.info("downloading checkpoint %s -> %s", uri, dest)
    try:
        with replacing(dest) as tmp:
            store.get_file(key, tmp)
    except Exception as e:
        raise CheckpointRefused(f"cannot download S3 checkpoint {uri}: {e}") from e
    return str(dest)


def _read_state_dict(path: str) -> dict:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointRefused(
            f"checkpoint {path} carries pickled Python objects/code that weights_only=True loading refuses "
            f"(only tensors and plain containers are accepted); re-save it as {{'model': state_dict}}. "
            f"Detail: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    except Exception as e:
        raise CheckpointRefused(f"checkpoint {path} is unreadable: {type(e).__name__}: {e}") from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointRefused(
            f"checkpoint {path} is not in the SAM 2 format {{'model': state_dict}} "
            f"(top-level keys: {sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__})"
        )
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointRefused(f"checkpoint {path}: state_dict values that are not tensors: {bad[:5]}")
    return sd


def _load_state_dict_strict(model, sd: dict, path: str, config_path: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape_bad = [k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if shape_bad:
            k = min(shape_bad)
            parts.append(f"{len(shape_bad)} shape mismatches (e.g. {k}: checkpoint {tuple(sd[k].shape)} "
                         f"vs model {tuple(own[k].shape)})")
        raise CheckpointRefused(
            f"checkpoint {path} does not match config {config_path}: " + "; ".join(parts)
            + ". Is the config (tiny/small/base_plus/large, sam2 vs sam2.1) the one it was trained with?"
        )
    model.load_state_dict(sd, strict=True)


def save_checkpoint(model, path: str | os.PathLike) -> str:
    """Write ``{"model": state_dict}`` (the official SAM 2 layout) atomically; returns its SHA-256."""
    import torch

    m = getattr(model, "model", model)  # accept a LoadedModel too
    sd = {k: v.detach().to("cpu") for k, v in m.state_dict().items()}
    with replacing(path) as tmp:
        torch.save({"model": sd}, tmp)
    return sha256_file(path)


# ---------------------------------------------------------------------------------------------
# model


def set_tracking(model, multimask: bool) -> Any:
    """How propagated frames are decoded: ``multimask=True`` is sam2's default (three candidate masks,
    the best predicted IoU kept, and a switch to another token when the single one is unstable);
    ``False`` outputs ONE mask per object (``multimask_output_for_tracking`` and the mask decoder's
    ``dynamic_multimask_via_stability`` off), the very mask SAM 2's loss supervises in a model trained
    that way. Attributes of the model object, not of the checkpoint: :class:`ModelSpec` carries the
    choice (and the ``models`` table records the one a checkpoint was trained with)."""
    m = getattr(model, "model", model)   # accept a LoadedModel too
    m.multimask_output_for_tracking = bool(multimask)
    m.sam_mask_decoder.dynamic_multimask_via_stability = bool(multimask)
    return model


def load_model(spec: ModelSpec | None = None) -> LoadedModel:
    """Build the SAM 2 video predictor from its hydra config and load (or refuse) the checkpoint."""
    spec = spec or ModelSpec()
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    config_path, model_name = resolve_config(spec.config)
    cfg_bytes = _config_file(config_path).read_bytes()
    overrides = image_size_overrides(spec.image_size)
    device = _resolve_device(spec.device)
    hashed = overrides + _PREDICTOR_POSTPROCESSING + ([] if spec.multimask_tracking else _SINGLE_MASK_TRACKING)
    config_sha = sha256_bytes(cfg_bytes + b"\0" + json.dumps(hashed).encode())

    # checkpoint first: refuse before spending time on the model
    ckpt_path = ckpt_sha = None
    if spec.checkpoint:
        ckpt_path = fetch_checkpoint(spec.checkpoint, spec.cache_dir, spec.checkpoint_sha256)
        ckpt_sha = sha256_file(ckpt_path)
        if spec.checkpoint_sha256 and ckpt_sha != spec.checkpoint_sha256.strip().lower():
            raise CheckpointRefused(
                f"checkpoint {spec.checkpoint} has SHA-256 {ckpt_sha}, but the pin expects "
                f"{spec.checkpoint_sha256.strip().lower()}; refusing to load it"
            )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = build_sam2_video_predictor(
            config_path, ckpt_path=None, device="cpu", mode="eval", hydra_overrides_extra=overrides,
        )
    if ckpt_path:
        _load_state_dict_strict(model, _read_state_dict(ckpt_path), spec.checkpoint, config_path)
        log.info("loaded SAM 2 checkpoint %s (sha256 %s) into %s", spec.checkpoint, ckpt_sha, model_name)
    else:
        log.warning(
            "SAM 2 (%s) is running with RANDOM WEIGHTS: no checkpoint was given, so every mask it "
            "produces is meaningless. Set a checkpoint (SAV_SAM2_CHECKPOINT) for real labels.", model_name,
        )
    model = model.to(device).eval()
    if not spec.multimask_tracking:
        set_tracking(model, multimask=False)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if spec.compile:
            model.image_encoder.forward = torch.compile(model.image_encoder.forward, dynamic=False)
    elif spec.compile:
        log.info("compile=True ignored on %s (CUDA only)", device)
    return LoadedModel(
        model=model, device=device, model_name=model_name, config_path=config_path,
        config_sha256=config_sha, checkpoint_sha256=ckpt_sha, random_weights=ckpt_path is None,
        image_size=int(model.image_size), bf16=bool(spec.bf16), spec=spec,
    )


def describe(loaded: LoadedModel) -> dict:
    """Small JSON-able summary for asset metadata."""
    return {
        "model_name": loaded.model_name, "config": loaded.config_path, "config_sha256": loaded.config_sha256,
        "checkpoint_sha256": loaded.checkpoint_sha256, "random_weights": loaded.random_weights,
        "device": loaded.device, "image_size": loaded.image_size, "precision": loaded.precision,
        "spec": {k: v for k, v in asdict(loaded.spec).items() if k != "cache_dir"},
    }

"""The model registry: the ``models`` table, promotion, and which model labels.

One row per fine-tuned checkpoint (``tables/models/registry/<sha256>.parquet``, schema
:data:`sav_assets.lib.store.tables.MODELS`): checkpoint URI and SHA-256, parent model, model config and
input size, training data version (digest of the shard manifests used), training config hash,
``run_key`` (what makes a re-run skip), step count, metrics (JSON: loss, steps/s, evaluation), and the
promotion flag and time.

:func:`promote` marks a model promoted (its row rewritten first, then any previously promoted row
unmarked, so a crash in between leaves two promoted rows and :func:`current_labeling_model` still
picks the latest promotion). :func:`current_labeling_model` is the promoted row with the latest
``promoted_at`` or None: the labeling model then comes from it (``SAM2Resource.spec``), else from
``SAV_SAM2_CHECKPOINT`` / random weights. :class:`EvaluationPolicy` says which candidates
``model_evaluation`` compares and which one it promotes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import MODELS, to_table

BATCH = "registry"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def list_models(lake: Lake) -> list[dict]:
    """Every registered model, newest first."""
    rows = lake.read_table("models", schema=MODELS).to_pylist()
    return sorted(rows, key=lambda r: r["created_at"] or _now(), reverse=True)


def get_model(lake: Lake, sha_prefix: str) -> dict:
    """The one model whose SHA-256 starts with ``sha_prefix`` (KeyError when none or ambiguous)."""
    hits = [r for r in list_models(lake) if r["sha256"].startswith(sha_prefix.lower())]
    if len(hits) != 1:
        raise KeyError(f"{'no' if not hits else len(hits)} registered model(s) match {sha_prefix!r}")
    return hits[0]


def find_run(lake: Lake, run_key: str) -> dict | None:
    """The model a run with this key produced (a re-run with the same inputs is skipped)."""
    return next((r for r in list_models(lake) if r["run_key"] == run_key), None)


def _write(lake: Lake, row: dict) -> None:
    lake.write_part("models", BATCH, row["sha256"], to_table([row], MODELS))


def register(lake: Lake, *, sha256: str, checkpoint_uri: str, parent_sha256: str | None, model_config: str,
             image_size: int, data_version: str, config_hash: str, run_key: str, steps: int,
             metrics: dict, multimask_tracking: bool = True) -> dict:
    """Add (or update, keeping its promotion) the row of a checkpoint; ``multimask_tracking``: how it
    was trained to track, so it labels and is evaluated the same way (:func:`model_spec`)."""
    old = next((r for r in list_models(lake) if r["sha256"] == sha256), None)
    row = {"sha256": sha256, "checkpoint_uri": checkpoint_uri, "parent_sha256": parent_sha256,
           "model_config": model_config, "image_size": int(image_size), "data_version": data_version,
           "config_hash": config_hash, "run_key": run_key, "steps": int(steps),
           "multimask_tracking": bool(multimask_tracking),
           "metrics_json": json.dumps(metrics, sort_keys=True, default=str),
           "promoted": bool(old and old["promoted"]), "promoted_at": old["promoted_at"] if old else None,
           "created_at": old["created_at"] if old else _now()}
    _write(lake, row)
    return row


def update_metrics(lake: Lake, sha256: str, metrics: dict) -> dict:
    """Merge ``metrics`` into a model's metrics (e.g. its evaluation)."""
    row = get_model(lake, sha256)
    row["metrics_json"] = json.dumps({**json.loads(row["metrics_json"] or "{}"), **metrics}, sort_keys=True,
                                     default=str)
    _write(lake, row)
    return row


def promote(lake: Lake, sha256: str) -> dict:
    """Make a registered model the labeling model."""
    row = get_model(lake, sha256)
    row.update(promoted=True, promoted_at=_now())
    _write(lake, row)
    for other in list_models(lake):
        if other["promoted"] and other["sha256"] != row["sha256"]:
            other.update(promoted=False)
            _write(lake, other)
    return row


def current_labeling_model(lake: Lake) -> dict | None:
    """The promoted model (latest promotion), or None: labeling uses the configured checkpoint."""
    rows = [r for r in list_models(lake) if r["promoted"]]
    return max(rows, key=lambda r: r["promoted_at"]) if rows else None


def model_spec(row: dict, **kw):
    """The :class:`~sav_assets.lib.label.model.ModelSpec` that loads a registered model as it was trained:
    its config, input size and tracking, its checkpoint pinned by its SHA-256; ``kw``: the rest
    (device, precision, cache)."""
    from sav_assets.lib.label.model import ModelSpec

    return ModelSpec(config=row["model_config"], checkpoint=row["checkpoint_uri"], checkpoint_sha256=row["sha256"],
                     image_size=row["image_size"], multimask_tracking=row.get("multimask_tracking") is not False, **kw)


@dataclass
class EvaluationPolicy:
    """Which candidates ``model_evaluation`` compares with the current labeling model, and when one is
    promoted; every default written here once (defs/training.py reads them)."""

    split: str = "val"                 # eval layout split (exports/sav_<split>)
    candidates: int = 1                # newest unpromoted models evaluated
    max_videos: int | None = None      # at most this many val videos; None: all
    auto_promote: bool = False         # promote the best candidate beating the current model
    margin: float = 0.02               # J&F gain (0..1) needed for automatic promotion

    def choose(self, current_jf: float, candidate_jf: dict[str, float]) -> tuple[str, float] | None:
        """The candidate to promote (``(sha256, J&F)``): the best one beating ``current_jf`` by
        ``margin``, only with ``auto_promote``; None otherwise."""
        ok = [(jf, sha) for sha, jf in candidate_jf.items() if jf - current_jf >= self.margin]
        if not self.auto_promote or not ok:
            return None
        jf, sha = max(ok)
        return sha, jf

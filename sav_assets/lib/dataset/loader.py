"""PyTorch loading of the training shards written by :mod:`sav_assets.lib.dataset.shards`.

``ShardDataset`` is an ``IterableDataset`` built on a plain ``webdataset`` pipeline; shards are split
across distributed ranks (``split_by_node``) and DataLoader workers (``split_by_worker``), so each
sample is seen once per epoch. Each item is::

    {"frames": uint8 tensor T x H x W x 3,
     "masks":  uint8 tensor T x N x H x W (0/1, decoded from the stored COCO RLE),
     "meta":   dict (meta.json plus "__key__" and "__url__")}
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence

import numpy as np

from sav_assets.lib.sav import rle

_FRAME = re.compile(r"^f(\d+)\.jpg$")


def decode_sample(sample: dict, as_torch: bool = True) -> dict:
    """A raw webdataset sample (bytes per member) to frames / masks / meta."""
    from PIL import Image

    names = sorted((k for k in sample if _FRAME.match(k)), key=lambda k: int(_FRAME.match(k).group(1)))
    imgs = []
    for k in names:
        im = Image.open(io.BytesIO(sample[k]))
        imgs.append(np.asarray(im if im.mode == "RGB" else im.convert("RGB")))
    frames = np.stack(imgs)
    masks_doc = json.loads(sample["masks.json"])
    meta = json.loads(sample["meta.json"])
    h, w = masks_doc["size"]
    n = len(masks_doc["masklet_id"])
    masks = np.empty((len(masks_doc["rles"]), n, h, w), dtype=np.uint8)
    if n:
        for t, per_frame in enumerate(masks_doc["rles"]):
            masks[t] = rle.decode_many(per_frame)       # one batched decode per frame: N x H x W
    meta["__key__"] = sample.get("__key__")
    meta["__url__"] = sample.get("__url__")
    if as_torch:
        import torch

        return {"frames": torch.from_numpy(frames), "masks": torch.from_numpy(masks), "meta": meta}
    return {"frames": frames, "masks": masks, "meta": meta}


class _ShardDatasetImpl:
    """Iterate decoded windows from shard paths/URLs (anything ``webdataset`` opens).

    ``shuffle_buffer`` > 0 shuffles samples within a buffer (deterministic for a given ``seed``);
    ``shard_shuffle`` shuffles the shard order. Without them the order is the written order.
    """

    def __init__(self, urls: str | Sequence[str], shuffle_buffer: int = 0, shard_shuffle: bool = False,
                 seed: int = 0):
        super().__init__()
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.shuffle_buffer = int(shuffle_buffer)
        self.shard_shuffle = bool(shard_shuffle)
        self.seed = seed

    def pipeline(self):
        """The plain webdataset pipeline (raw samples: bytes per member)."""
        import webdataset as wds

        ds = wds.WebDataset(self.urls, shardshuffle=(len(self.urls) if self.shard_shuffle else False),
                            nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                            empty_check=False, seed=self.seed)
        if self.shuffle_buffer > 0:
            ds = ds.shuffle(self.shuffle_buffer)
        return ds

    def __iter__(self) -> Iterator[dict]:
        for sample in self.pipeline():
            yield decode_sample(sample)

    @classmethod
    def from_manifest(cls, lake, out_prefix: str, **kwargs):
        """Only the shards listed in ``<out_prefix>/manifest.json`` of a local lake (published ones)."""
        from sav_assets.lib.dataset.publisher import read_manifest
        from sav_assets.lib.store.lake import safe_relpath

        m = read_manifest(lake, out_prefix)
        if m is None:
            raise FileNotFoundError(f"no manifest under {out_prefix}")
        prefix = safe_relpath(out_prefix)
        return cls([str(lake.local_path(f"{prefix}/{s['shard']}")) for s in m["shards"]], **kwargs)


_built: dict[str, type] = {}


def __getattr__(name: str):
    """``ShardDataset`` subclasses ``torch.utils.data.IterableDataset``; torch is imported only when
    the name is first used (``from sav_assets.lib.dataset.loader import ShardDataset``), not with the module."""
    if name != "ShardDataset":
        raise AttributeError(name)
    if name not in _built:
        import torch.utils.data

        cls = type("ShardDataset", (_ShardDatasetImpl, torch.utils.data.IterableDataset),
                   {"__module__": __name__, "__doc__": _ShardDatasetImpl.__doc__})
        _built[name] = cls
        globals()[name] = cls
    return _built[name]

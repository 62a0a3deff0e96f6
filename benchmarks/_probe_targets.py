"""The probe baselines that run inside the isolated children (``run_isolated("_probe_targets:...")``).

A module of their own, importing nothing at the top: a child imports it afresh on every call, and
importing ``bench_ingest`` there (with the pipeline modules it needs) would bill the baseline for
imports our probe does not pay (the isolation helper preloads PyAV, decord and the probe module).
"""


def header_probe(path: str) -> dict:
    """The header-only baseline: container and stream fields, no frame decoded."""
    import av

    with av.open(path) as c:
        vs = c.streams.video[0]
        cc = vs.codec_context
        return {"frames": int(vs.frames or 0), "fps": float(vs.average_rate or 0), "width": cc.width,
                "height": cc.height, "codec": cc.name}


def decord_index(path: str) -> int:
    """decord's index alone (every packet read, nothing decoded): a part of our probe."""
    import decord

    return len(decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1))

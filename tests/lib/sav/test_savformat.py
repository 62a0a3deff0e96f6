"""SA-V JSON import/export: exact round trip on the real sample files, rows, validation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import SHARED_DATA

from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle
from sav_assets.lib.sav.annotations import (
    SavFormatError,
    dumps_sav,
    export_sav,
    find_annotation_files,
    import_sav,
)
from sav_assets.lib.store.tables import MASKLET_FRAMES, MASKLETS, SAV_ANNOTATIONS, to_table

DATA = SHARED_DATA / "sav_example"
KINDS = ("manual", "auto")


def assert_identical(a, b, path="$"):
    """Equal values, equal types (float vs int), equal key order, recursively."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: key order {list(a)} vs {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.fixture(scope="module")
def sample():
    out = {}
    for kind in KINDS:
        p = DATA / f"sav_000001_{kind}.json"
        if not p.is_file():
            pytest.skip(f"shared sample missing: {p}")
        text = p.read_text()
        out[kind] = (text, json.loads(text), str(p))
    return out


@pytest.fixture(scope="module")
def imported(sample):
    return {kind: import_sav(doc, source_uri=uri) for kind, (_, doc, uri) in sample.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact_and_byte_identical(sample, imported, kind):
    text, doc, _ = sample[kind]
    out = export_sav(*imported[kind], masklet_type=kind)
    assert_identical(doc, out)
    assert_identical(doc, json.loads(dumps_sav(out)))
    assert dumps_sav(out) == text  # byte-identical to the shipped file


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_arrow_tables(sample, imported, kind):
    """What the pipeline does: rows -> Parquet-typed tables -> rows -> export."""
    text = sample[kind][0]
    header, masklets, frames = imported[kind]
    h = to_table([{**header, "batch_id": "b"}], SAV_ANNOTATIONS).to_pylist()[0]
    m = to_table([{**r, "batch_id": "b"} for r in masklets], MASKLETS).to_pylist()
    f = to_table([{**r, "batch_id": "b"} for r in frames], MASKLET_FRAMES).to_pylist()
    f.reverse()  # row order must not matter
    assert dumps_sav(export_sav(h, m, f, masklet_type=kind)) == text


def test_export_uses_rows_video_id_not_the_documents(sample, imported):
    """The pipeline renames rows to its own video id; the exported header carries that id (in the
    file's key order), never the file's own ``video_id`` (which may be anything, even a path)."""
    text = sample["manual"][0]
    header, masklets, frames = imported["manual"]
    def ren(rows):
        return [{**r, "video_id": "vid-123"} for r in rows]
    other = [{**f, "video_id": "someone-else", "counts": "bogus"} for f in frames]
    out = export_sav({**header, "video_id": "vid-123"}, ren(masklets), ren(frames) + other, masklet_type="manual")
    assert out["video_id"] == "vid-123" and list(out) == list(json.loads(text))
    assert dumps_sav(out) == text.replace('"video_id": "sav_000001"', '"video_id": "vid-123"', 1)


def _video(h=848, w=480, frames=483, vid="sav_000001"):
    return {"video_id": vid, "video_height": h, "video_width": w, "video_frame_count": frames, "video_fps": 24.0}


@pytest.mark.parametrize("kind", KINDS)
def test_import_checked_against_the_probed_video(sample, kind):
    _, doc, uri = sample[kind]
    h, m, f = import_sav(doc, source_uri=uri, video=_video(), max_masklets=256, max_frames=1800)
    assert h["video_id"] == "sav_000001" and len(m) == len(doc["masklet_id"]) and len(f) == len(m) * len(doc["masklet"])
    with pytest.raises(SavFormatError, match=r"masks are 848x480 .* but the video 'sav_000001' is 480x848"):
        import_sav(doc, source_uri=uri, video=_video(h=480, w=848))
    with pytest.raises(SavFormatError, match=r"121 annotated frames; the last maps to video frame 480 but .* 100 frames"):
        import_sav(doc, source_uri=uri, video=_video(frames=100))
    import_sav(doc, source_uri=uri, video=_video(frames=478))   # one annotation step of slack
    n = len(doc["masklet_id"])
    with pytest.raises(SavFormatError, match=rf"{n} masklets; at most {n - 1} .*import_max_masklets"):
        import_sav(doc, source_uri=uri, max_masklets=n - 1)
    with pytest.raises(SavFormatError, match=r"121 annotated frames per masklet; at most 120 .*import_max_frames"):
        import_sav(doc, source_uri=uri, max_frames=120)
    with pytest.raises(SavFormatError, match="no probed frame size"):
        import_sav(doc, source_uri=uri, video={"video_id": "x"})


@pytest.mark.parametrize("kind", KINDS)
def test_sam2_path_builds_the_sample_from_typed_columns(sample, imported, kind):
    """Without header/sav_fields_json, export from the videos row and typed columns (SAM 2 labels)."""
    text, doc, _ = sample[kind]
    _, masklets, frames = imported[kind]
    video = {"video_id": "sav_000001", "video_duration": 20.125, "video_frame_count": 483,
             "video_height": 848, "video_width": 480, "video_resolution": 407040,
             "video_environment": "Indoor", "video_split": "train"}
    bare = [{k: v for k, v in r.items() if k != "sav_fields_json"} for r in masklets]
    out = export_sav(None, bare, frames, video=video, masklet_type=kind)
    assert_identical(doc, out)
    assert dumps_sav(out) == text


@pytest.mark.parametrize("kind", KINDS)
def test_rows_have_schema_columns_and_doc_values(sample, imported, kind):
    _, doc, uri = sample[kind]
    header, masklets, frames = imported[kind]
    assert set(header) == set(SAV_ANNOTATIONS.names) - {"batch_id", "imported_at"}
    assert header["masklet_type"] == kind and header["source_uri"] == uri
    hdr = json.loads(header["header_json"])
    assert list(hdr) == [k for k in doc if not isinstance(doc[k], list)]
    for r in masklets:
        assert set(r) == set(MASKLETS.names) - {"batch_id", "created_at"}
        assert r["source"] == "sav_import" and r["masklet_type"] == kind
        assert isinstance(r["masklet_first_appeared_frame"], int)
    for r in frames:
        assert set(r) == set(MASKLET_FRAMES.names) - {"batch_id"}
    n, nf = doc["masklet_num"], len(doc["masklet"])
    assert len(masklets) == n and len(frames) == n * nf
    # RLE strings are kept byte for byte; frame_idx follows SA-V's 24 -> 6 fps rule
    by = {(r["masklet_id"], r["ann_idx"]): r for r in frames}
    for k in (0, 57, nf - 1):
        for j in range(n):
            fr = by[(doc["masklet_id"][j], k)]
            assert fr["counts"] == doc["masklet"][k][j]["counts"] and fr["size"] == [848, 480]
            assert fr["frame_idx"] == 4 * k
    for j, r in enumerate(masklets):
        assert r["masklet_size_abs"] == doc["masklet_size_abs"][j]
        assert r["masklet_first_appeared_frame"] == int(doc["masklet_first_appeared_frame"][j])
        assert json.loads(r["sav_fields_json"])["masklet_id"] == doc["masklet_id"][j]
    if kind == "auto":
        stab = doc["masklet_stability_score"]
        for j, r in enumerate(masklets):
            col = [stab[k][j] for k in range(nf)]
            vis = [by[(j, k)]["visible"] for k in range(nf)]
            picked = [s for s, v in zip(col, vis) if v]
            assert r["masklet_stability_min"] == min(picked)
            assert r["masklet_stability_mean"] == pytest.approx(np.mean(picked))
            assert [by[(j, k)]["stability_score"] for k in range(nf)] == col
    else:
        assert all(r["masklet_stability_mean"] is None for r in masklets)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("kind", KINDS)
def test_derived_fields_match_decoded_areas(sample, imported, kind):
    _, doc, _ = sample[kind]
    _, masklets, frames = imported[kind]
    for j, r in enumerate(masklets):
        rows = sorted((f for f in frames if f["masklet_id"] == r["masklet_id"]), key=lambda f: f["ann_idx"])
        areas = [int(rle.decode(doc["masklet"][f["ann_idx"]][j]).sum()) for f in rows]
        assert areas == [f["area"] for f in rows]
        assert [f["bbox"] for f in rows[:3]] == [rle.bbox(doc["masklet"][k][j]) for k in range(3)]
        d = masklet_fields.derive(areas, 848, 480)
        for key in ("masklet_visibility_changes", "masklet_first_appeared_frame", "masklet_frame_count",
                    "masklet_size_bucket"):
            assert r[key] == d[key], key
        assert r["masklet_size_abs"] == pytest.approx(d["masklet_size_abs"], rel=1e-9)
        assert r["masklet_size_rel"] == pytest.approx(d["masklet_size_rel"], rel=1e-6)


# ----------------------------------------------------------------------------- small synthetic docs

def small_doc(kind="auto", n=2, nf=3, h=6, w=5):
    masks = []
    for k in range(nf):
        row = []
        for j in range(n):
            m = np.zeros((h, w), np.uint8)
            m[j:j + 2, k:k + 2] = 1
            row.append(rle.encode(m))
        masks.append(row)
    doc = {"video_id": "v1", "video_duration": 1.0, "video_frame_count": float(4 * nf),
           "video_height": float(h), "video_width": float(w), "video_resolution": float(h * w),
           "video_environment": "Outdoor", "video_split": "train", "masklet": masks,
           "masklet_id": list(range(n)), "masklet_size_rel": [4 / (h * w)] * n,
           "masklet_size_abs": [4.0] * n, "masklet_size_bucket": ["small"] * n,
           "masklet_visibility_changes": [0] * n, "masklet_first_appeared_frame": [0] * n,
           "masklet_frame_count": [nf] * n, "masklet_edited_frame_count": [0] * n,
           "masklet_type": [kind] * n,
           "masklet_stability_score": ([[0.5 + 0.1 * j for j in range(n)] for _ in range(nf)]
                                       if kind == "auto" else [None] * n),
           "masklet_num": n}
    return doc


def test_small_doc_round_trip_and_frame_numbering():
    doc = small_doc()
    out = export_sav(*import_sav(doc, source_uri="x"), masklet_type="auto")
    assert_identical(doc, out)
    _, _, fr = import_sav(doc, source_uri="x", frame_step=2)
    assert sorted({f["frame_idx"] for f in fr}) == [0, 2, 4]
    _, _, fr = import_sav(doc, source_uri="x", frame_indices=[3, 10, 17], frame_step=2)
    assert sorted({f["frame_idx"] for f in fr}) == [3, 10, 17]
    with pytest.raises(ValueError):
        import_sav(doc, source_uri="x", frame_indices=[1, 2])


def test_missing_per_masklet_fields_are_derived():
    doc = small_doc("manual")
    for key in ("masklet_size_abs", "masklet_size_rel", "masklet_first_appeared_frame"):
        del doc[key]
    _, ms, _ = import_sav(doc, source_uri="x")
    assert ms[0]["masklet_size_abs"] == 4.0 and ms[0]["masklet_first_appeared_frame"] == 0


def test_export_sam2_labeled_rows():
    video = {"video_id": "v9", "video_duration": 2.0, "video_frame_count": 48, "video_height": 6,
             "video_width": 5, "video_resolution": 30}
    m = np.zeros((6, 5), np.uint8)
    m[1:3, 1:4] = 1
    r = rle.encode(m)
    frames = [{"video_id": "v9", "masklet_id": 3, "masklet_type": "auto", "ann_idx": k, "frame_idx": 4 * k,
               "size": r["size"], "counts": r["counts"], "area": 6, "stability_score": 0.75}
              for k in range(2)]
    masklets = [{"video_id": "v9", "masklet_id": 3, "masklet_type": "auto"}]  # typed columns absent
    doc = export_sav(None, masklets, frames, video=video, masklet_type="auto")
    assert list(doc)[:9] == ["video_id", "video_duration", "video_frame_count", "video_height", "video_width",
                             "video_resolution", "video_environment", "video_split", "masklet"]
    assert list(doc)[-1] == "masklet_num" and doc["masklet_num"] == 1
    assert doc["video_height"] == 6.0 and isinstance(doc["video_height"], float)
    assert doc["masklet_stability_score"] == [[0.75], [0.75]]
    assert doc["masklet_size_abs"] == [6.0] and doc["masklet_first_appeared_frame"] == [0]
    assert doc["masklet"][1][0] == r
    back = import_sav(json.loads(dumps_sav(doc)), source_uri="y")
    assert back[1][0]["masklet_stability_mean"] == 0.75
    man = export_sav(None, [{**masklets[0], "masklet_type": "manual"}],
                     [{**f, "masklet_type": "manual", "stability_score": None} for f in frames],
                     video=video, masklet_type="manual")
    assert man["masklet_stability_score"] == [None] and man["masklet_first_appeared_frame"] == [0.0]
    assert isinstance(man["masklet_first_appeared_frame"][0], float)


def _corrupt(fn):
    doc = small_doc()
    fn(doc)
    return doc


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("video_height"), "video_height"),
    (lambda d: d.pop("masklet"), "masklet"),
    (lambda d: d.__setitem__("video_width", 7.0), "RLE size at masklet[0][0] is [6, 5] but the video is 6x7"),
    (lambda d: d["masklet"][1].pop(), "masklet[1] has 1 objects, expected 2"),
    (lambda d: d["masklet_size_abs"].pop(), "masklet_size_abs has 1 entries, expected 2"),
    (lambda d: d["masklet_stability_score"][2].append(1.0), "masklet_stability_score[2] has 3 values"),
    (lambda d: d["masklet"][0][1].__setitem__("counts", d["masklet"][0][1]["counts"] + "3"),
     "masklet[0][1]: runs cover"),
    (lambda d: d["masklet"][2][0].__setitem__("counts", "ab~"), "outside the RLE alphabet"),
    (lambda d: d["masklet"][2][0].__setitem__("counts", "0g"), "truncated"),
    (lambda d: d["masklet"][2][0].__setitem__("counts", [30]), "expected a compressed string"),
    (lambda d: d["masklet"][2][0].__setitem__("size", [6.0, 5.0]), "two ints"),
    (lambda d: d["masklet"][0].__setitem__(0, None), "RLE at masklet[0][0] is NoneType"),
    (lambda d: d.__setitem__("masklet_num", 3), "masklet_num is 3"),
    (lambda d: d.__setitem__("masklet_id", [0, 0]), "duplicates"),
    (lambda d: d.__setitem__("masklet_type", ["auto", "manual"]), "mixes"),
    (lambda d: d.__setitem__("video_height", "tall"), "video_height is 'tall'"),
])
def test_malformed_docs_raise(mutate, message):
    with pytest.raises(SavFormatError, match=None) as e:
        import_sav(_corrupt(mutate), source_uri="x")
    assert message in str(e.value)


def test_malformed_real_doc_raises(sample):
    doc = copy.deepcopy(sample["auto"][1])
    doc["masklet"][60][4]["size"] = [480, 848]
    with pytest.raises(SavFormatError, match=r"masklet\[60\]\[4\]"):
        import_sav(doc, source_uri="x")


def test_find_annotation_files():
    keys = ["in/a/sav_1.mp4", "in/a/sav_1_manual.json", "ann/sav_1_auto.json", "ann/b/sav_2_auto.json",
            "sav_3.mp4", "sav_3_manual.json"]
    assert find_annotation_files("in/a/sav_1.mp4", keys) == {"manual": "in/a/sav_1_manual.json"}
    assert find_annotation_files("in/a/sav_1.mp4", keys, annotation_prefix="ann/") == {
        "manual": "in/a/sav_1_manual.json", "auto": "ann/sav_1_auto.json"}
    assert find_annotation_files("b/sav_2.mp4", keys, annotation_prefix="ann") == {"auto": "ann/b/sav_2_auto.json"}
    assert find_annotation_files("sav_3.mp4", keys) == {"manual": "sav_3_manual.json"}
    assert find_annotation_files("x/none.mp4", keys, annotation_prefix="ann") == {}

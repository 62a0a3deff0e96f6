"""Ingestion from an S3 prefix into an S3 lake root through moto's real HTTP server on loopback,
then DuckDB over the S3-hosted tables (no DuckDB extension downloaded)."""


import pytest

pytestmark = pytest.mark.s3



def test_s3_source_into_s3_lake(s3_endpoint, tmp_path, capsys):
    import boto3

    from sav_assets.cli import main
    from sav_assets.lib.ingest.demo import write_demo_corpus
    from sav_assets.lib.store.catalog import query
    from sav_assets.lib.store.lake import Lake

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="landing")
    s3.create_bucket(Bucket="lake")
    corpus = tmp_path / "corpus"
    write_demo_corpus(corpus, n_videos=1, seconds=5.0, width=1280, height=720, seed=1, include_bad=True)
    for p in sorted(corpus.iterdir()):
        s3.upload_file(str(p), "landing", f"incoming/day1/{p.name}",
                       ExtraArgs={"Metadata": {"licence": "cc-by-4.0"}} if p.suffix == ".mp4" else None)

    rc = main(["run", "--source", "s3://landing/incoming", "--root", "s3://lake/sav",
               "--select", "raw_videos video_quality"])
    assert rc == 0
    lake = Lake("s3://lake/sav")
    keys = set(lake.list("tables/videos"))
    assert any(k.endswith(".parquet") for k in keys)
    rows = {r["source_key"]: r for r in query(lake, "select * from videos").to_pylist()}
    assert rows["day1/sav_900000.mp4"]["status"] == "ok"
    assert rows["day1/sav_900000.mp4"]["source_uri"] == "s3://landing/incoming/day1/sav_900000.mp4"
    assert rows["day1/broken_empty.mp4"]["error_class"] == "empty_file"
    assert rows["day1/not_really.mp4"]["error_class"] == "not_a_container"
    q = query(lake, "select v.video_id, q.passed from videos v join video_quality q using (video_id)").to_pylist()
    assert [r["video_id"] for r in q] == ["sav_900000"]

    # second run: nothing new at the source, nothing added
    assert main(["run", "--source", "s3://landing/incoming", "--root", "s3://lake/sav",
                 "--select", "raw_videos video_quality"]) == 0
    assert query(lake, "select count(*) n from videos").to_pylist() == [{"n": 3}]

    # the same content under another key is recognised, not duplicated
    s3.copy_object(Bucket="landing", Key="incoming/day2/copy.mp4",
                   CopySource={"Bucket": "landing", "Key": "incoming/day1/sav_900000.mp4"})
    assert main(["run", "--source", "s3://landing/incoming", "--root", "s3://lake/sav",
                 "--select", "raw_videos"]) == 0
    assert query(lake, "select count(*) n from videos").to_pylist() == [{"n": 3}]
    dup = query(lake, "select disposition, duplicate_of from source_objects where source_key = 'day2/copy.mp4'")
    assert dup.to_pylist() == [{"disposition": "duplicate_content", "duplicate_of": "sav_900000"}]

    # ad hoc SQL through the CLI over the S3 lake, read-only
    capsys.readouterr()
    assert main(["sql", "--root", "s3://lake/sav", "--format", "csv", "select status, count(*) n from videos group by 1 order by 1"]) == 0
    out = capsys.readouterr().out
    assert "ok,1" in out.replace('"', "") and "quarantined,2" in out.replace('"', "")
    assert main(["sql", "--root", "s3://lake/sav", "copy videos to 'x.csv'"]) == 2

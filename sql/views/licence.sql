-- The licence ledger: per licence (video_quality.licence, from the sidecar or object metadata;
-- '(none)' when a video has none), what of the dataset is under it: videos, how many passed quality,
-- masklets, videos per split, and the training samples of published shards (shard_samples).
-- "What is under licence X": SELECT * FROM licence WHERE licence = 'cc-by-4.0';
-- or, per video: SELECT video_id FROM video_quality WHERE licence = 'cc-by-4.0'.
CREATE OR REPLACE VIEW licence AS
WITH q AS (
    SELECT video_id, coalesce(licence, '(none)') AS licence, passed
    FROM video_quality
    QUALIFY row_number() OVER (PARTITION BY video_id ORDER BY evaluated_at DESC NULLS LAST) = 1
), v AS (
    SELECT DISTINCT video_id, batch_id FROM videos WHERE status = 'ok'
), m AS (
    SELECT video_id, count(*) AS masklets FROM masklets GROUP BY video_id
), ss AS (
    SELECT video_id, count(*) AS shard_samples, count(DISTINCT batch_id || '/' || shard) AS shards
    FROM shard_samples GROUP BY video_id
), s AS (
    SELECT video_id, split
    FROM splits
    QUALIFY row_number() OVER (PARTITION BY video_id ORDER BY assigned_at DESC NULLS LAST) = 1
)
SELECT q.licence,
       count(*) AS videos,
       count(*) FILTER (WHERE q.passed) AS videos_passed_quality,
       coalesce(sum(m.masklets), 0)::BIGINT AS masklets,
       count(*) FILTER (WHERE s.split = 'train') AS train_videos,
       count(*) FILTER (WHERE s.split = 'val') AS val_videos,
       count(*) FILTER (WHERE s.split = 'test') AS test_videos,
       coalesce(sum(ss.shard_samples), 0)::BIGINT AS shard_samples,
       count(ss.video_id) AS videos_in_shards
FROM q
JOIN v USING (video_id)
LEFT JOIN m USING (video_id)
LEFT JOIN s USING (video_id)
LEFT JOIN ss USING (video_id)
GROUP BY q.licence
ORDER BY q.licence;

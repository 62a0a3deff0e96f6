-- Videos whose id or content hash occurs more than once across all batches (should be none).
-- Refusals of taken-down content (error_class taken_down) are one row per upload by design.
SELECT 'video_id' AS key_kind, video_id AS key, count(*) AS n, list(batch_id) AS batches
FROM videos WHERE error_class IS DISTINCT FROM 'taken_down' GROUP BY video_id HAVING count(*) > 1
UNION ALL
SELECT 'content_sha256', content_sha256, count(*), list(batch_id)
FROM videos WHERE error_class IS DISTINCT FROM 'taken_down' GROUP BY content_sha256 HAVING count(*) > 1;

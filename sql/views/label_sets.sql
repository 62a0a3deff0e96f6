-- One row per video and label set (model + labeler config: label_key) in all_masklets: which model
-- made it, how many masklets of each kind, and whether it is the video's current label set.
CREATE OR REPLACE VIEW label_sets AS
SELECT video_id, batch_id, label_key, any_value(model_name) AS model_name,
       any_value(checkpoint_sha256) AS checkpoint_sha256, any_value(random_weights) AS random_weights,
       bool_or(current) AS current, count(*) AS masklets,
       count(*) FILTER (WHERE masklet_type = 'auto') AS auto_masklets,
       min(created_at) AS created_at
FROM all_masklets
WHERE label_key IS NOT NULL
GROUP BY video_id, batch_id, label_key;

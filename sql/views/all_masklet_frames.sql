-- Every model's masklet frames, as all_masklets: the current ones (`masklet_frames`, with the
-- label_key of their masklet) and the archived ones (`masklet_frames_archive`) not repeated by the
-- video's current label set; `current` tells them apart.
CREATE OR REPLACE VIEW all_masklet_frames AS
SELECT f.*, m.label_key, true AS current
FROM masklet_frames f
LEFT JOIN (SELECT batch_id, video_id, masklet_type, masklet_id, any_value(label_key) AS label_key
           FROM masklets GROUP BY ALL) m USING (batch_id, video_id, masklet_type, masklet_id)
UNION ALL BY NAME
SELECT a.*, false AS current FROM masklet_frames_archive a
WHERE NOT EXISTS (SELECT 1 FROM masklets m WHERE m.video_id = a.video_id AND m.label_key = a.label_key);

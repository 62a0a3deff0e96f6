-- Every model's labels (lib/label/batch.py): the current ones (the plain `masklets` table, one label
-- set per video: its latest committed labeling run, after a relabel the promoted model's) and those a
-- relabel with another model or labeler config superseded (`masklets_archive`, one set per video and
-- label_key). `current` tells them apart; an archived set whose label_key is the video's current one
-- (restored, or left by an interrupted relabel) is not repeated. Plain `masklets` never double counts.
CREATE OR REPLACE VIEW all_masklets AS
SELECT *, true AS current FROM masklets
UNION ALL BY NAME
SELECT a.*, false AS current FROM masklets_archive a
WHERE NOT EXISTS (SELECT 1 FROM masklets m WHERE m.video_id = a.video_id AND m.label_key = a.label_key);

-- One-line summary printed by `sav-assets run`: what the lake holds now.
SELECT
  (SELECT count(*) FROM videos)                                     AS videos,
  (SELECT count(*) FROM videos WHERE status = 'ok')                 AS videos_ok,
  (SELECT count(*) FROM videos WHERE status = 'quarantined')        AS videos_quarantined,
  (SELECT count(*) FROM video_quality WHERE passed)                 AS videos_passed_quality,
  (SELECT count(*) FROM masklets)                                   AS masklets,
  (SELECT count(*) FROM masklet_frames)                             AS masklet_frames;

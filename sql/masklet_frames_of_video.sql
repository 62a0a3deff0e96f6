-- One video's masklet_frames rows (the evaluation layout streams them video by video): $1 = video_id.
SELECT * FROM masklet_frames WHERE video_id = $1 ORDER BY masklet_type, masklet_id, ann_idx, frame_idx;

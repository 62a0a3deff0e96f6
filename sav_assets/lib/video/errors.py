"""One vocabulary for everything that can go wrong with a video, and one exception that carries it.

Every stage that reads an untrusted video (probing at ingestion, frame sampling for quality,
decoding for labeling) reports a failure as :class:`VideoError` with an ``error_class`` from the
table below. These strings are a contract: they land in ``videos.error_class`` and
``label_runs.error_class`` and users filter on them in SQL (a video whose quality sampling fails gets
the ``decode_failed`` reason in ``video_quality.reasons``). Failures of the sandbox itself
(:meth:`sav_assets.lib.video.sandbox.IsolatedResult.error`) are ``decoder_timeout`` and
``decoder_crash`` in every stage.

=====================  =======================================================================
``empty_file``         a regular file of 0 bytes
``unreadable``         missing, or cannot be stat'ed / opened / downloaded
``not_a_container``    not a media container at all (random bytes, HTML saved as ``.mp4``)
``no_video_stream``    a valid container without a video stream (audio only)
``truncated``          recognisably a video whose header the demuxer cannot open (cut short)
``decode_error``       opens, but decoding fails (corrupt packets, wrong frame count, no frames)
``unsupported_codec``  a valid video in a codec the frame reader (decord) has no decoder for (AV1)
``over_limits``        header over the configured limits (resolution, duration, bytes)
``decoder_timeout``    the isolated decoder ran past its wall-clock timeout and was killed
``decoder_crash``      the isolated decoder died (signal, memory limit, CPU limit)
``empty_video``        decodes, but has nothing to label (no annotated frame)
``bad_prompt``         a prompt names a frame or object the video does not have
``bad_annotation``     an imported SA-V file does not match its video
``unresolved_video``   a prompt or review verdict names a video (file name, URI, SHA-256) that matches
                       no ingested video, or more than one
``bad_review``         a review verdict row is malformed or names a masklet the video does not have
``bad_correction``     a correction names a masklet, frame or point the labeled video does not have
``taken_down``         the content (by SHA-256) was taken down (``takedowns`` table): never ingested again
``oom``                the accelerator ran out of memory, even after the offloading retry
``worker_lost``        the process labeling it went away (a distributed worker)
``internal_error``     not written any more (an unexpected exception is a bug and fails the step); kept
                       so that ``label_runs`` rows of older runs stay valid
=====================  =======================================================================
"""

from __future__ import annotations

EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"
NOT_A_CONTAINER = "not_a_container"
NO_VIDEO_STREAM = "no_video_stream"
TRUNCATED = "truncated"
DECODE_ERROR = "decode_error"
UNSUPPORTED_CODEC = "unsupported_codec"
OVER_LIMITS = "over_limits"
DECODER_TIMEOUT = "decoder_timeout"
DECODER_CRASH = "decoder_crash"
EMPTY_VIDEO = "empty_video"
BAD_PROMPT = "bad_prompt"
BAD_ANNOTATION = "bad_annotation"
UNRESOLVED_VIDEO = "unresolved_video"
BAD_REVIEW = "bad_review"
BAD_CORRECTION = "bad_correction"
TAKEN_DOWN = "taken_down"
OOM = "oom"
WORKER_LOST = "worker_lost"
INTERNAL_ERROR = "internal_error"

ERROR_CLASSES = frozenset({
    EMPTY_FILE, UNREADABLE, NOT_A_CONTAINER, NO_VIDEO_STREAM, TRUNCATED, DECODE_ERROR, UNSUPPORTED_CODEC,
    OVER_LIMITS, DECODER_TIMEOUT, DECODER_CRASH, EMPTY_VIDEO, BAD_PROMPT, BAD_ANNOTATION, OOM, WORKER_LOST, INTERNAL_ERROR,
    UNRESOLVED_VIDEO, BAD_REVIEW, TAKEN_DOWN, BAD_CORRECTION,
})


class VideoError(Exception):
    """A classified failure of one video: ``VideoError(error_class, message)``.

    The class must be one of :data:`ERROR_CLASSES`; anything else is a bug in our code and fails
    loudly at the raise site."""

    def __init__(self, error_class: str, message: str):
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error_class!r} (see sav_assets.lib.video.errors)")
        super().__init__(f"{error_class}: {message}")
        self.error_class = error_class
        self.message = message

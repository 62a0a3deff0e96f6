"""The one child-process protocol: plain calls (zygote and subprocess) and the streaming mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sav_assets.lib.video import sandbox
from sav_assets.lib.video.errors import DECODE_ERROR, DECODER_CRASH, DECODER_TIMEOUT
from sav_assets.lib.video.sandbox import run_isolated, stream_isolated
from sav_assets.lib.video.sandbox_child import MAGIC
from sav_assets.lib.video.zygote import PRELOAD

# the child finds the test targets through PYTHONPATH (``env`` runs a fresh subprocess)
TARGETS = {"PYTHONPATH": str(Path(__file__).resolve().parent)}


def stream(target: str, kwargs: dict, **kw) -> list:
    return list(stream_isolated(f"_sandbox_targets:{target}", kwargs, env=TARGETS, **kw))


@pytest.mark.parametrize("mode", ["zygote", "subprocess"])
def test_isolation_reports_signals_and_timeouts(tmp_path, mode):
    r = run_isolated("os:abort", timeout_s=20, mode=mode)
    assert (r.status, r.signal) == ("crashed", "SIGABRT")
    r = run_isolated("os:getpid", timeout_s=20, mode=mode)
    assert r.status == "ok" and r.value != os.getpid()  # a fresh process every time
    assert r.peak_rss_mb and r.peak_rss_mb > 1
    assert run_isolated("os:getpid", timeout_s=20, mode=mode).value != r.value
    r = run_isolated("os:listdir", {"path": "/definitely/not/here"}, timeout_s=20, mode=mode)
    assert (r.status, r.exc_type, r.error_class) == ("error", "FileNotFoundError", None)
    fifo = tmp_path / "f.mp4"
    os.mkfifo(fifo)
    r = run_isolated("sav_assets.lib.video.probe:_probe_child", {"path": str(fifo), "max_width": 10, "max_height": 10,
                                                                "max_duration_s": 1.0}, timeout_s=1.0, mode=mode)
    assert r.status == "timeout" and r.wall_s < 4.0


@pytest.mark.parametrize("mode", ["zygote", "subprocess"])
def test_test_faults_map_onto_the_one_vocabulary(mode):
    r = run_isolated("os:getpid", timeout_s=20, mode=mode, test_fault="segv")
    assert (r.status, r.signal) == ("crashed", "SIGSEGV")
    assert r.error().error_class == DECODER_CRASH == "decoder_crash"
    r = run_isolated("os:getpid", timeout_s=1.0, mode=mode, test_fault="hang")
    assert r.status == "timeout" and r.wall_s < 4.0
    assert r.error().error_class == DECODER_TIMEOUT == "decoder_timeout"


def test_a_classified_failure_keeps_its_class_across_the_process_boundary(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(5000))
    r = run_isolated("sav_assets.lib.video.probe:_probe_child",
                     {"path": str(junk), "max_width": 100, "max_height": 100, "max_duration_s": 1.0}, timeout_s=20)
    assert (r.status, r.exc_type, r.error_class) == ("error", "VideoError", "not_a_container")
    assert not r.message.startswith("not_a_container")  # the bare message; the class travels apart
    e = r.error()
    assert (e.error_class, e.message) == ("not_a_container", r.message)


def test_stream_answers_one_message_per_item_then_done():
    results = stream("counting", {"n": 3, "size": 1000}, timeout_s=30)
    assert [r.status for r in results] == ["ok", "ok", "ok", "done"]
    assert len({r.value["pid"] for r in results[:3]}) == 1 and results[0].value["pid"] != os.getpid()
    for i, r in enumerate(results[:3]):
        assert r.value["i"] == i
        assert r.arrays["a"].dtype == np.int16 and r.arrays["a"].shape == (1000, 3)
        assert (r.arrays["a"] == i).all()
    assert results[-1].value == {"sent": 3} and results[-1].peak_rss_mb > 1


@pytest.mark.parametrize("classified", [True, False])
def test_stream_failure_after_some_messages(classified):
    results = stream("failing", {"after": 2, "classified": classified}, timeout_s=30)
    assert [r.status for r in results] == ["ok", "ok", "error"]
    err = results[-1].error(unexpected=DECODE_ERROR)
    if classified:
        assert (results[-1].error_class, err.error_class) == (DECODE_ERROR, DECODE_ERROR)
        assert err.message == "frame 2 is corrupt"
    else:
        assert results[-1].error_class is None and results[-1].exc_type == "ValueError"
        assert err.error_class == DECODE_ERROR and "a bug in the target" in err.message


def test_stream_timeout_is_per_message_and_kills_the_child():
    results = stream("sleepy", {"pauses": [0.4] * 5}, timeout_s=1.5)  # 2 s in all, 0.4 s per message
    assert [r.status for r in results] == ["ok"] * 5 + ["done"]
    results = stream("sleepy", {"pauses": [0.0, 30.0]}, timeout_s=1.5)
    assert [r.status for r in results] == ["ok", "timeout"]
    assert results[-1].error().error_class == DECODER_TIMEOUT
    with pytest.raises(ProcessLookupError):
        os.kill(results[0].value["pid"], 0)


def test_stream_stopped_early_kills_the_child():
    it = stream_isolated("_sandbox_targets:sleepy", {"pauses": [0.0, 30.0]}, env=TARGETS, timeout_s=60)
    pid = next(it).value["pid"]
    it.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_stream_memory_limit():
    results = stream("hungry", {"mb": 1024}, timeout_s=30, memory_mb=512)
    assert [r.status for r in results] == ["ok", "error"] and results[-1].exc_type == "MemoryError"
    err = results[-1].error(memory_mb=512)
    assert err.error_class == DECODER_CRASH and "out of memory (memory_mb=512)" in err.message
    assert [r.status for r in stream("hungry", {"mb": 64}, timeout_s=30, memory_mb=512)] == ["ok", "ok", "done"]


def test_stream_cpu_limit_is_a_budget_per_message():
    # 4 x 0.7 s of CPU under a 2 s budget per message: more than 2 s in all, fine
    results = stream("busy", {"cpu_seconds": [0.7] * 4}, timeout_s=60, cpu_s=2)
    assert [r.status for r in results] == ["ok"] * 4 + ["done"]
    results = stream("busy", {"cpu_seconds": [0.1, 6.0]}, timeout_s=60, cpu_s=2)
    assert [r.status for r in results] == ["ok", "crashed"] and results[-1].signal == "SIGXCPU"
    assert "CPU time limit" in results[-1].error().message


def test_answers_are_never_unpickled_and_object_arrays_are_refused():
    head = {"ok": True, "value": 1, "arrays": [{"name": "x", "dtype": "|O", "shape": [1]}]}
    src = sandbox._BytesSource(MAGIC + json.dumps(head).encode() + b"\n" + b"\0" * 8)
    sandbox._read_magic(src)
    with pytest.raises(ValueError, match="object"):
        sandbox._read_message(src)
    assert sandbox._zygote_result(1.0, 0, b"garbage", "", False, 0.1).status == "crashed"


def test_the_zygote_preloads_only_the_video_layer():
    ours = [m for m in PRELOAD if m.startswith("sav_assets")]
    assert ours and all(m.startswith("sav_assets.lib.video.") for m in ours)

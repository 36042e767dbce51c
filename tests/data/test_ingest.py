"""The bad-input zoo: every item quarantined with its reason or handled as documented."""
import io
import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from conftest import need_data
from qwen_audio_mt.data.build import build
from qwen_audio_mt.data.convert import manifest
from qwen_audio_mt.data.ingest import IngestConfig, RawItem, ingest, sanitize_key, to_mono_16k, Reject
from qwen_audio_mt.data.shards import ShardConfig, iter_shard
from qwen_audio_mt.render import Renderer

SR = 16000


def tone(seconds, sr=SR, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A manifest of good and bad items; returns (folder, expected reasons, expected good keys)."""
    root = tmp_path_factory.mktemp("zoo")
    fsdd = need_data("fsdd", "7_jackson_3.wav")
    jfk = need_data("real_clips", "jfk.flac")
    digit, fsdd_sr = sf.read(fsdd, dtype="float32")
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" + bytes(range(256)) * 8)
    (root / "truncated.flac").write_bytes(jfk.read_bytes()[: jfk.stat().st_size // 2])
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "silent.wav", np.zeros(SR, np.float32), SR)
    nan = tone(1.0)
    nan[500] = np.nan
    sf.write(root / "nan.wav", nan, SR, subtype="FLOAT")
    (root / "stereo.flac").write_bytes(jfk.read_bytes())
    sf.write(root / "u8.wav", digit, fsdd_sr, subtype="PCM_U8")
    sf.write(root / "8k.wav", digit, fsdd_sr)
    sf.write(root / "96k.wav", tone(1.0, 96000), 96000)
    sf.write(root / "long.flac", tone(45.0), SR)
    lines = [
        ({"audio": "corrupt.wav", "task": "asr", "audio_lang": "en", "text": "a"}, "undecodable"),
        ({"audio": "truncated.flac", "task": "asr", "audio_lang": "en", "text": "a"}, "undecodable"),
        ({"audio": "nothere.wav", "task": "asr", "audio_lang": "en", "text": "a"}, "missing_file"),
        ({"audio": "empty.wav", "task": "asr", "audio_lang": "en", "text": "a"}, "empty_file"),
        ({"audio": "silent.wav", "task": "asr", "audio_lang": "en", "text": "a"}, "silent"),
        ({"audio": "nan.wav", "task": "asr", "audio_lang": "en", "text": "a"}, "non_finite"),
        ({"audio": "stereo.flac", "task": "asr", "audio_lang": "en", "text": "ask not"}, None),
        ({"audio": "u8.wav", "task": "digit_recognition", "audio_lang": "en", "text_itn": "7"}, None),
        ({"audio": "8k.wav", "task": "digit_recognition", "audio_lang": "en", "text_itn": "7"}, None),
        ({"audio": "96k.wav", "task": "instrument", "instrument": "flute"}, None),
        ({"audio": "long.flac", "task": "asr", "audio_lang": "en", "text": "a"}, "too_long"),
        ({"audio": "long.flac", "task": "acoustic_scene", "scene": "park", "key": "long_scene"}, None),
        ({"audio": "8k.wav", "task": "asr", "audio_lang": "xx", "text": "seven", "key": "lang"}, "bad_language"),
        ({"audio": "8k.wav", "task": "acoustic_scene", "scene": "moon", "key": "label"}, "bad_label"),
        ({"audio": "8k.wav", "task": "digit_recognition", "audio_lang": "en", "text_itn": "7"}, "duplicate_key"),
        ({"audio": "8k.wav", "task": "word_timestamps", "audio_lang": "en", "key": "late",
          "words": [["seven", 0.1, 9.0]]}, "time_out_of_range"),
    ]
    text = "".join(json.dumps(obj) + "\n" for obj, _ in lines)
    bad_utf8 = b'{"audio": "8k.wav", "task": "asr", "audio_lang": "en", "text": "caf\xe9"}\n'
    (root / "zoo.jsonl").write_bytes(text.encode() + bad_utf8)
    reasons = Counter(r for _, r in lines if r) + Counter({"bad_text_encoding": 1})
    return root, reasons


def test_zoo_report_counts_equal_the_zoo(zoo, tmp_path):
    root, reasons = zoo
    plan = manifest.plan(root / "zoo.jsonl")
    index = build(plan.streams, tmp_path, ShardConfig(workers=1), plan.source, progress=False)
    assert index["inputs"] == 17
    assert index["quarantine"]["by_reason"] == dict(reasons)
    quarantined = [json.loads(x) for x in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert Counter(q["reason"] for q in quarantined) == reasons
    assert all(q["source"] == "manifest" and q["key"] and q["detail"] for q in quarantined)
    samples = {key: (flac, meta) for shard in sorted(tmp_path.glob("*.tar")) for key, flac, meta in iter_shard(shard)}
    # stereo, 8-bit, 8 kHz, 96 kHz handled; the 45-s scene cut into 30 s + 15 s windows
    assert set(samples) == {"stereo", "u8", "8k", "96k", "long_scene_w0", "long_scene_w1"}
    for key, (flac, meta) in samples.items():
        audio, sr = sf.read(io.BytesIO(flac))
        assert sr == SR and audio.ndim == 1 and len(audio) / SR == pytest.approx(meta["duration"], abs=1e-3)
        assert np.abs(audio).max() > 0.01  # nothing replaced by zeros
    assert samples["long_scene_w0"][1]["duration"] == pytest.approx(30.0)
    assert samples["long_scene_w1"][1]["duration"] == pytest.approx(15.0)
    assert samples["stereo"][1]["duration"] == pytest.approx(11.0, abs=0.01)
    assert samples["8k"][1]["text_itn"] == "7" and samples["8k"][1]["flags"] == []


def test_quarantine_limit_fails_the_cli_build(zoo, tmp_path, capsys):
    from qwen_audio_mt.cli import main
    root, reasons = zoo
    code = main(["shards", "build", "--format", "manifest", "--src", str(root / "zoo.jsonl"),
                 "--out", str(tmp_path / "out"), "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 1 and "above the limit 5.0%" in err
    assert f"quarantined {sum(reasons.values())} of 17 inputs" in out
    code = main(["shards", "build", "--format", "manifest", "--src", str(root / "zoo.jsonl"),
                 "--out", str(tmp_path / "out"), "--workers", "1", "--max-quarantine", "0.9"])
    assert code == 0


def test_resampling_preserves_a_tone():
    x = tone(1.0, 44100)
    y = to_mono_16k(np.stack([x, x], axis=1), 44100)
    assert len(y) == SR
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == 220  # 1-Hz bins over 1 s


def test_clipping_is_flagged_not_rejected():
    loud = np.clip(tone(1.0, amp=2.0), -1, 1)
    records = ingest(RawItem("loud", "instrument", "train", {"instrument": "organ"}, "t", audio=loud, sr=SR),
                     Renderer())
    assert records[0].meta["flags"] == ["clipping"]


def test_too_short_and_key_sanitising():
    out = ingest(RawItem("short", "instrument", "train", {"instrument": "organ"}, "t", audio=tone(0.05), sr=SR),
                 Renderer(), IngestConfig())
    assert out.reason == "too_short"
    assert sanitize_key("../../etc/passwd") == "etc_passwd"
    assert sanitize_key("/abs/path.with.dots") == "abs_path_with_dots"
    with pytest.raises(Reject):
        sanitize_key("...")


def test_undecodable_text_at_any_depth_is_quarantined():
    bad = "caf" + b"\xe9".decode("utf-8", errors="surrogateescape")
    item = RawItem("nested", "overlapped_asr", "train", {"texts": ["fine", bad]}, "t", audio=tone(1.0), sr=SR,
                   audio_lang="en")
    out = ingest(item, Renderer())
    assert out.reason == "bad_text_encoding" and "texts[1]" in out.detail

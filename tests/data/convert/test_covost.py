"""CoVoST 2 converter on split TSVs beside a Common Voice clips/ folder (real speech as mp3)."""
from __future__ import annotations

import pytest

from convert_kit import JFK, JFK_TEXT, assert_audio, clip, put, put_text, quarantined, run, samples
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.covost import plan

HEAD = "path\tsentence\ttranslation\tclient_id\n"
DE = "Und so, meine amerikanischen Mitbürger, fragt nicht, was euer Land für euch tun kann."
ZH = "因此，我的美国同胞们，不要问你的国家能为你做什么。"


def make_folder(root):
    """en clips; en->de train/dev and en->zh-CN test TSVs (the JFK clip in two pairs); broken:
    a dev row whose clip is missing, a pair outside the vocabulary (en->cy)."""
    put(root / "clips" / "common_voice_en_1.mp3", *clip(*JFK), fmt="MP3")
    put(root / "clips" / "common_voice_en_2.mp3", *clip("fsdd", "7_jackson_3.wav"), fmt="MP3")
    put_text(root / "covost_v2.en_de.train.tsv",
             HEAD + f"common_voice_en_1.mp3\t{JFK_TEXT}\t{DE}\tc1\ncommon_voice_en_2.mp3\tSeven.\tSieben.\tc2\n")
    put_text(root / "covost_v2.en_de.dev.tsv", HEAD + "common_voice_en_9.mp3\tGone.\tWeg.\tc3\n")
    put_text(root / "covost_v2.en_zh-CN.test.tsv", HEAD + f"common_voice_en_1.mp3\t{JFK_TEXT}\t{ZH}\tc1\n")
    put_text(root / "covost_v2.en_cy.test.tsv", HEAD + "common_voice_en_2.mp3\tSeven.\tSaith.\tc2\n")
    return root


def test_covost_build(tmp_path):
    p = plan(make_folder(tmp_path / "en"))
    assert p.source["dataset"] == "CoVoST 2" and p.source["pairs"] == ["en_cy", "en_de", "en_zh-CN"]
    idx = run(p, tmp_path / "out")
    assert idx["tasks"]["speech_translation"]["splits"] == {"test": 1, "train": 2}
    got = samples(tmp_path / "out")
    de, zh = got["common_voice_en_1-en_de"], got["common_voice_en_1-en_zh-CN"]
    assert (de["translation"], de["text"], de["audio_lang"], de["text_lang"]) == (DE, JFK_TEXT, "en", "de")
    assert (zh["translation"], zh["text_lang"], zh["split"]) == (ZH, "zh", "test")
    assert_audio(de, 11.0, tol=0.1)
    assert got["common_voice_en_2-en_de"]["translation"] == "Sieben."
    assert quarantined(tmp_path / "out") == {"common_voice_en_9-en_de": "missing_file",
                                             "common_voice_en_2-en_cy": "bad_language"}


def test_covost_tsvs_in_subfolder_clips_at_src(tmp_path):
    root = make_folder(tmp_path / "en")
    (root / "covost").mkdir()
    for tsv in root.glob("covost_v2.*.tsv"):
        tsv.rename(root / "covost" / tsv.name)
    idx = run(plan(root), tmp_path / "out")
    assert idx["tasks"]["speech_translation"]["samples"] == 3


def test_covost_layout_errors(tmp_path):
    with pytest.raises(ConvertError, match="covost_v2"):
        plan(tmp_path)
    put_text(tmp_path / "covost_v2.fr_en.train.tsv", "path\tsentence\tclient_id\na.mp3\tSalut\tc\n")
    with pytest.raises(ConvertError, match="clips/"):
        plan(tmp_path)
    (tmp_path / "clips").mkdir()
    with pytest.raises(ConvertError, match="fr_en.train.tsv: missing column.*translation"):
        plan(tmp_path)

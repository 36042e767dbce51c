from collections import Counter
from pathlib import Path

import pytest

from qwen_audio_mt.tasks import METRICS, TARGET_KINDS, TaskError, load_tasks
from qwen_audio_mt.paths import tags_dir

GOOD = """
tasks:
  - name: scene
    domain: sound
    prompt: "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"
    target: {kind: label, field: scene, labels: [a, b]}
    metric: accuracy
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    return str(path)


def test_registry_size_and_domains():
    reg = load_tasks()
    assert len(reg) >= 35
    per_domain = Counter(t.domain for t in reg)
    assert all(per_domain[d] >= 8 for d in ("speech", "sound", "music")), per_domain
    for task in reg:
        assert task.metric in METRICS and task.target.kind in TARGET_KINDS
    assert reg.index["asr"] == 0 and len(reg.index) == len(reg)


def test_families_mirror_qwen_audio():
    names = set(load_tasks().names)
    for name in ("asr", "speech_translation", "word_timestamps", "language_id", "gender", "speaker_id",
                 "emotion", "intent", "slot_filling", "named_entity_recognition", "keyword_spotting",
                 "speech_qa", "overlapped_asr", "diarization", "sound_event", "sound_event_detection",
                 "acoustic_scene", "caption_clotho", "sound_aqa", "audio_grounding", "music_pitch",
                 "music_velocity", "instrument", "chord_quality", "tempo", "melody", "meter",
                 "music_caption", "music_qa"):
        assert name in names


def test_good_file_loads(tmp_path):
    reg = load_tasks(write(tmp_path, GOOD))
    assert reg.get("scene").closed_labels == ("a", "b")


@pytest.mark.parametrize("change, message", [
    (("<|scene|>", "<|scenery|>"), "task 'scene': unknown tag <|scenery|> in prompt"),
    (("    metric: accuracy\n", ""), "task 'scene': metric None is missing or unknown"),
    (("metric: accuracy", "metric: rouge"), "task 'scene': metric 'rouge' is missing or unknown"),
    (("<|keyword|><|en|>", "<|en|><|keyword|>"), "task 'scene': position 2: found <|en|>, expected"),
    (("labels: [a, b]", "labels: [yes, b]"), "task 'scene': labels must be strings"),
    (("labels: [a, b]", "labels: []"), "task 'scene': target kind 'label' needs 'labels'"),
    (("domain: sound", "domain: noise"), "task 'scene': domain 'noise' is not one of"),
    (("kind: label", "kind: blob"), "task 'scene': target kind 'blob' is not one of"),
])
def test_bad_definitions_fail_naming_the_task(tmp_path, change, message):
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(TaskError) as e:
        load_tasks(write(tmp_path, text))
    assert message in str(e.value)


def test_duplicate_name_fails(tmp_path):
    text = GOOD + GOOD.split("tasks:\n", 1)[1]
    with pytest.raises(TaskError, match="task 'scene': duplicate task name"):
        load_tasks(write(tmp_path, text))


def test_unknown_tag_in_target_format(tmp_path):
    text = GOOD.replace("{kind: label, field: scene, labels: [a, b]}",
                        '{kind: tag, field: p, format: "<|midi_pitchx_{}|>", label_range: [0, 3]}')
    with pytest.raises(TaskError, match=r"task 'scene': unknown tag <\|midi_pitchx_0\|> in target"):
        load_tasks(write(tmp_path, text))


def test_unknown_task_suggests_close_names():
    with pytest.raises(TaskError, match="unknown task 'asrr'; did you mean asr"):
        load_tasks().get("asrr")


def test_registry_file_is_the_repo_data():
    assert load_tasks().source == str(tags_dir() / "tasks.yaml")

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.manifest import ManifestError, ManifestRow, read_manifest, write_manifest

HEADER = "id,split,label,video,audio,text\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(HEADER + body)
    return path


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    rows = [
        ManifestRow(
            id="a", split="train", label="happy", video="v/a.mp4", audio="v/a.mp4", text="hi, there"
        ),
        ManifestRow(id="b", split="test", label="sad", audio="w/b.wav"),
        ManifestRow(id="c", split="val", label="sad", text='quoted "text"\nwith a newline'),
    ]
    manifest = read_manifest(write_manifest(tmp_path / "m.csv", rows))
    assert manifest.rows == tuple(rows)
    assert manifest.classes() == ("happy", "sad")
    assert manifest.modalities() == ("video", "audio", "text")
    assert manifest.resolve("v/a.mp4") == (tmp_path / "v/a.mp4").resolve()
    assert [r.id for r in manifest.split("train")] == ["a"]


def test_empty_cells_mean_absent_modality(tmp_path: Path) -> None:
    manifest = read_manifest(write(tmp_path, "a,train,x,,a.wav,\nb,train,y, , ,some text\n"))
    assert manifest.rows[0].modalities() == ("audio",)
    assert manifest.rows[1].modalities() == ("text",)


def test_every_bad_row_is_reported_at_once(tmp_path: Path) -> None:
    body = (
        "ok1,train,x,a.mp4,,\n"  # row 2: fine
        "bad1,training,x,a.mp4,,\n"  # row 3: unknown split
        ",train,x,a.mp4,,\n"  # row 4: empty id
        "ok1,val,x,a.mp4,,\n"  # row 5: duplicate id
        "bad2,test,,a.mp4,,\n"  # row 6: missing label
        "bad3,test,x,,,\n"  # row 7: no modality
        "bad4,test,x,/abs/a.mp4,,\n"  # row 8: absolute path
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(write(tmp_path, body))
    message = str(err.value)
    assert len(err.value.problems) == 6
    assert "row 3: unknown split 'training'" in message
    assert "row 4: empty id" in message
    assert "row 5: duplicate id 'ok1' (first on row 2)" in message
    assert "row 6: missing label" in message
    assert "row 7: no modality" in message
    assert "row 8: video path '/abs/a.mp4' must be relative" in message
    assert str(tmp_path / "manifest.csv") in message


def test_several_problems_on_one_row_are_all_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        read_manifest(write(tmp_path, ",nope,,a.mp4,,\n"))
    expected = "row 2: empty id; unknown split 'nope' (expected one of ('train', 'val', 'test'))"
    assert err.value.problems == [expected + "; missing label"]


def test_wrong_header_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,label,split\n1,a,train\n")
    with pytest.raises(ManifestError, match="row 1: header must be"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        read_manifest(tmp_path / "nowhere.csv")


def test_extra_cells_are_a_bad_row(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="row 2: 7 cells"):
        read_manifest(write(tmp_path, "a,train,x,a.mp4,,,extra\n"))

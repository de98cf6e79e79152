"""Pair folders, column-mapped files and format detection: one entry point, iter_pairs."""

from __future__ import annotations

import json

import pytest

from prefdiff.config import load_config
from prefdiff.data import ReadReport, iter_pairs, open_image, resolve
from prefdiff.errors import ConfigError, DataError

from .fixtures import BLUE, GREEN, RED, jpeg, v2_row, write_pair_folder, write_parquet


def _data(path, *overrides):
    return load_config(None, [f"data.path={path}", *overrides]).data


def _near(a, b, tol=8):
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


@pytest.fixture
def pair_folder(tmp_path):
    return write_pair_folder(
        tmp_path / "folder",
        [
            {"prompt": "a", "chosen": ("a_good.jpg", RED), "rejected": ("a_bad.jpg", BLUE), "rater": "r1"},
            {"prompt": "b", "chosen": ("b_good.jpg", GREEN), "rejected": "images/missing.jpg"},
            {"prompt": "", "chosen": ("c_good.jpg", RED), "rejected": ("c_bad.jpg", BLUE)},
            {"prompt": "d", "rejected": ("d_bad.jpg", BLUE)},
            "{not json",
            {"prompt": "e", "chosen": ("e_good.jpg", GREEN), "rejected": ("e_bad.jpg", RED)},
        ],
    )


def test_pair_folder_paths_relative_to_the_file(pair_folder):
    report = ReadReport()
    pairs = list(iter_pairs(_data(pair_folder), report))
    assert [p.prompt for p in pairs] == ["a", "e"]
    assert pairs[0].winner == pair_folder / "images" / "a_good.jpg"
    assert _near(open_image(pairs[1].winner).getpixel((2, 2)), GREEN)
    assert pairs[0].provenance["rater"] == "r1" and pairs[0].row_id == "pairs.jsonl:1"
    assert pairs[0].source == "pairs_jsonl" and pairs[0].raw_labels == (1.0, 0.0)
    assert report.dropped == {
        "image file not found": 1,
        "empty caption": 1,
        "missing key chosen": 1,
        "invalid JSON line": 1,
    }
    assert report.examples["invalid JSON line"] == ["pairs.jsonl:5"]
    # the file itself works as data.path too
    assert len(list(iter_pairs(_data(pair_folder / "pairs.jsonl"), ReadReport()))) == 2


def test_pair_folder_strict_names_file_and_line(pair_folder):
    with pytest.raises(DataError, match=r"pairs.jsonl, line 2: image file not found \(loser: .*missing.jpg\)"):
        list(iter_pairs(_data(pair_folder, "data.strict=true"), ReadReport()))


def test_mapped_jsonl_label_style(tmp_path):
    (tmp_path / "img").mkdir()
    for name, colour in (("r.jpg", RED), ("b.jpg", BLUE)):
        (tmp_path / "img" / name).write_bytes(jpeg(colour))
    lines = [
        {"text": "one", "left": "img/r.jpg", "right": "img/b.jpg", "pref": 0, "judge": "gpt"},
        {"text": "two", "left": "img/r.jpg", "right": "img/b.jpg", "pref": 1},
        {"text": "tie", "left": "img/r.jpg", "right": "img/b.jpg", "pref": 0.5},
        {"text": "odd", "left": "img/r.jpg", "right": "img/b.jpg", "pref": 2},
    ]
    path = tmp_path / "votes.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    mapping = [
        "data.columns.prompt=text",
        "data.columns.image_0=left",
        "data.columns.image_1=right",
        "data.columns.label_0=pref",
    ]
    report = ReadReport()
    pairs = list(iter_pairs(_data(path, *mapping), report))
    assert resolve(_data(path, *mapping)).format == "mapped"
    assert [p.prompt for p in pairs] == ["one", "two"]
    assert pairs[0].winner == tmp_path / "img" / "b.jpg"  # pref 0: image_1 won
    assert pairs[1].winner == tmp_path / "img" / "r.jpg"
    assert pairs[0].provenance["judge"] == "gpt" and pairs[0].raw_labels == (0.0, 1.0)
    assert report.dropped == {"tie": 1, "pref outside {0, 0.5, 1}": 1}


def test_mapped_parquet_pair_style_with_image_structs(tmp_path):
    rows = [
        {
            "text": "x",
            "good": {"bytes": jpeg(GREEN), "path": None},
            "bad": {"bytes": jpeg(RED), "path": None},
            "big": "ignored",
        },
        {
            "text": "y",
            "good": {"bytes": None, "path": None},
            "bad": {"bytes": jpeg(RED), "path": None},
            "big": "ignored",
        },
    ]
    path = write_parquet(tmp_path / "hpd.parquet", rows)
    report = ReadReport()
    config = _data(path, "data.columns.prompt=text", "data.columns.chosen=good", "data.columns.rejected=bad")
    pairs = list(iter_pairs(config, report))
    assert [p.prompt for p in pairs] == ["x"]
    assert _near(open_image(pairs[0].winner).getpixel((2, 2)), GREEN)
    assert report.dropped == {"image missing": 1}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.columns.chosen=a", "data.columns.rejected=b"], "'data.columns.prompt' is empty"),
        (["data.columns.prompt=p", "data.columns.chosen=a"], "'data.columns.rejected' is empty"),
        (["data.columns.prompt=p", "data.columns.chosen=a", "data.columns.label_0=l"], "not both"),
        (["data.format=mapped", "data.columns.prompt=p"], "name the images"),
    ],
)
def test_bad_column_mapping_names_the_key(tmp_path, overrides, message):
    path = write_parquet(tmp_path / "x.parquet", [{"p": "a"}])
    with pytest.raises(ConfigError, match=message):
        list(iter_pairs(_data(path, *overrides), ReadReport()))


def test_missing_mapped_column_is_named_in_strict_mode(tmp_path):
    path = write_parquet(tmp_path / "x.parquet", [{"text": "a", "good": jpeg(RED)}])
    overrides = [
        "data.columns.prompt=text",
        "data.columns.chosen=good",
        "data.columns.rejected=bad",
        "data.strict=true",
    ]
    with pytest.raises(DataError, match=r"x.parquet: missing required column\(s\) bad"):
        list(iter_pairs(_data(path, *overrides), ReadReport()))


def test_format_detection(tmp_path, pair_folder):
    parquet = write_parquet(tmp_path / "pp.parquet", [v2_row(0, 1.0)])
    assert resolve(_data(parquet)).format == "pickapic"
    assert resolve(_data(pair_folder)).format == "pairs_jsonl"
    assert (
        resolve(
            _data(parquet, "data.columns.prompt=caption", "data.columns.chosen=jpg_0", "data.columns.rejected=jpg_1")
        ).format
        == "mapped"
    )
    with pytest.raises(DataError, match="'data.path' is empty"):
        resolve(_data(""))
    with pytest.raises(DataError, match="expected a .parquet or .arrow file"):
        resolve(_data(pair_folder / "pairs.jsonl", "data.format=pickapic"))


def test_pair_folder_paths_that_leave_the_folder_are_refused_unless_allowed(tmp_path):
    """``..``, an absolute path and a symlink out of the folder are refused rows (counted, named
    under strict), as the label app refuses them; data.allow_outside_paths=true accepts them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "far.jpg").write_bytes(jpeg(RED))
    folder = write_pair_folder(
        tmp_path / "folder",
        [
            {"prompt": "in", "chosen": ("good.jpg", GREEN), "rejected": ("bad.jpg", BLUE)},
            {"prompt": "up", "chosen": "../outside/far.jpg", "rejected": "images/bad.jpg"},
            {"prompt": "abs", "chosen": str(outside / "far.jpg"), "rejected": "images/bad.jpg"},
            {"prompt": "link", "chosen": "images/link.jpg", "rejected": "images/bad.jpg"},
        ],
    )
    (folder / "images" / "link.jpg").symlink_to(outside / "far.jpg")
    report = ReadReport()
    assert [p.prompt for p in iter_pairs(_data(folder), report)] == ["in"]
    assert report.dropped == {"image path outside the folder": 3}
    with pytest.raises(DataError, match=r"pairs.jsonl, line 2: image path outside the folder \(chosen: \.\./outside"):
        list(iter_pairs(_data(folder, "data.strict=true"), ReadReport()))
    allowed = [p.prompt for p in iter_pairs(_data(folder, "data.allow_outside_paths=true"), ReadReport())]
    assert allowed == ["in", "up", "abs", "link"]


def test_a_caption_that_is_not_text_says_what_it_found(tmp_path):
    for kind, value in (("int", 12345), ("bytes", b"\x00bytes")):
        rows = [v2_row(0, 1.0, caption=value), v2_row(1, 1.0, caption=value)]
        report = ReadReport()
        assert not list(iter_pairs(_data(write_parquet(tmp_path / f"{kind}.parquet", rows)), report))
        assert report.dropped == {"caption is not text": 2}, kind
        with pytest.raises(DataError, match=rf"caption is not text \({kind}: "):
            list(iter_pairs(_data(tmp_path / f"{kind}.parquet", "data.strict=true"), ReadReport()))


def test_a_line_that_is_not_utf8_is_counted_not_fatal(tmp_path):
    folder = write_pair_folder(
        tmp_path / "folder",
        [
            {"prompt": "a", "chosen": ("a_good.jpg", RED), "rejected": ("a_bad.jpg", BLUE)},
            {"prompt": "b", "chosen": ("b_good.jpg", GREEN), "rejected": ("b_bad.jpg", RED)},
        ],
    )
    lines = (folder / "pairs.jsonl").read_bytes().splitlines()
    latin1 = '{"prompt": "caf\xe9", "chosen": "images/a_good.jpg", "rejected": "images/a_bad.jpg"}'.encode("latin-1")
    (folder / "pairs.jsonl").write_bytes(b"\n".join([lines[0], latin1, lines[1]]) + b"\n")
    report = ReadReport()
    assert [p.prompt for p in iter_pairs(_data(folder), report)] == ["a", "b"]
    assert report.dropped == {"invalid JSON line": 1} and report.examples["invalid JSON line"] == ["pairs.jsonl:2"]
    with pytest.raises(DataError, match=r"pairs.jsonl, line 2: invalid JSON line \(not UTF-8 \(byte 15"):
        list(iter_pairs(_data(folder, "data.strict=true"), ReadReport()))

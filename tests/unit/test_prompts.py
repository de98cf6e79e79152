import json

import pytest

from prefdiff.errors import DataError
from prefdiff.evaluate.generate import paired_seed
from prefdiff.evaluate.prompts import PromptItem, read_prompts


def test_every_prompt_file_format(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n\n  a dog  \n")
    assert read_prompts(txt) == [PromptItem("a cat"), PromptItem("a dog")]
    tsv = tmp_path / "parti.tsv"
    tsv.write_text("Prompt\tCategory\tChallenge\tNote\na red car\tVehicles\tColors\t\nan owl\tAnimals\tBasic\tx\n")
    assert read_prompts(tsv) == [PromptItem("a red car", "Vehicles"), PromptItem("an owl", "Animals")]
    js = tmp_path / "hps.json"
    js.write_text(json.dumps(["one", {"prompt": "two", "category": "c"}]))
    assert read_prompts(js) == [PromptItem("one"), PromptItem("two", "c")]
    styles = tmp_path / "styles.json"
    styles.write_text(json.dumps({"anime": ["x", "y"], "photo": ["z"]}))
    assert read_prompts(styles) == [PromptItem("x", "anime"), PromptItem("y", "anime"), PromptItem("z", "photo")]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "p1", "category": "k"}\n{"prompt": "p2"}\n')
    assert read_prompts(jl) == [PromptItem("p1", "k"), PromptItem("p2")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.csv", "a\n", "unknown prompt-file format '.csv'"),
        ("p.tsv", "Text\tCategory\nx\ty\n", "needs a 'Prompt' column"),
        ("p.jsonl", '{"prompt": "ok"}\n{"text": "no"}\n', "line 2 has no 'prompt' string"),
        ("p.json", "{not json", "not valid JSON"),
        ("p.txt", "\n\n", "no prompts"),
    ],
)
def test_bad_prompt_files_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_prompts(path)


def test_paired_seeds_are_stable_and_distinct():
    seeds = {paired_seed(0, p, i) for p in range(50) for i in range(8)}
    assert len(seeds) == 400
    assert paired_seed(0, 3, 1) == paired_seed(0, 3, 1) != paired_seed(1, 3, 1)
    assert all(0 <= s < 2**31 for s in seeds)

"""`prefdiff config --list`, recipes by name, and `prefdiff toy shapes` (the tiny recipes' data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefdiff.recipes import list_recipes


def prefdiff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefdiff", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_config_list_prints_each_recipe_with_its_description():
    result = prefdiff("config", "--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list_recipes()
    assert all(len(line.split()) > 1 for line in lines), "every recipe has a description"
    assert "_paper" not in result.stdout


def test_config_by_name_and_by_legacy_path_print_the_same(tmp_path):
    by_name = prefdiff("config", "-c", "sd15_dpo_lora", cwd=tmp_path)
    by_path = prefdiff("config", "-c", "configs/sd15_dpo_lora.yaml", cwd=tmp_path)
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == by_path.stdout
    assert "output_dir: runs/sd15_dpo_lora" in by_name.stdout


def test_unknown_recipe_is_one_line_listing_the_names(tmp_path):
    result = prefdiff("train", "-c", "tiny_dop_lora", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: unknown recipe 'tiny_dop_lora'" in result.stderr and "tiny_dpo_lora" in result.stderr
    assert "Traceback" not in result.stderr


def test_toy_shapes_writes_the_tiny_recipes_data_path(tmp_path):
    result = prefdiff("toy", "shapes", "--rows", "12", "--size", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "runs" / "data" / "shapes.parquet")
    assert table.num_rows == 12 and {"caption", "jpg_0", "jpg_1", "label_0"} <= set(table.column_names)
    assert "runs/data/shapes.parquet" in (Path(__file__).parents[2] / "src/prefdiff/recipes/_tiny.yaml").read_text()

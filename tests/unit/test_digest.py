"""prefdiff.digest.weights_digest: the definition the encoding cache stores (so it must not
drift), and that it changes when a weight file does."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefdiff.digest import weights_digest

MIB = 2**20


def test_the_definition_the_cache_stores(tmp_path: Path) -> None:
    """sha256 over "name:size" + the bytes of each weight file in name order (small files are
    read whole), first 16 hex digits; other suffixes are ignored."""
    (tmp_path / "b.json").write_bytes(b"{}")
    (tmp_path / "a.safetensors").write_bytes(b"abc")
    (tmp_path / "notes.md").write_bytes(b"ignored")
    expected = hashlib.sha256(b"a.safetensors:3" + b"abc" + b"b.json:2" + b"{}").hexdigest()[:16]
    assert weights_digest(tmp_path) == expected


def test_it_changes_when_a_weight_file_changes(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 100)
    before = weights_digest(tmp_path)
    weights.write_bytes(b"\x00" * 99 + b"\x01")
    assert weights_digest(tmp_path) != before
    (tmp_path / "extra.bin").write_bytes(b"")
    assert weights_digest(tmp_path) not in (before, weights_digest(tmp_path / "missing"))


def test_a_large_file_is_read_at_both_ends_only(tmp_path: Path) -> None:
    weights = tmp_path / "big.bin"
    data = bytearray(3 * MIB)
    weights.write_bytes(bytes(data))
    before = weights_digest(tmp_path)
    data[-1] = 1
    weights.write_bytes(bytes(data))
    after_tail = weights_digest(tmp_path)
    data[int(1.5 * MIB)] = 1  # the middle of a big file is not read (for speed on multi-GB weights)
    weights.write_bytes(bytes(data))
    assert after_tail != before and weights_digest(tmp_path) == after_tail


def test_component_folders_by_relative_path(tmp_path: Path) -> None:
    for component in ("unet", "vae"):
        (tmp_path / component).mkdir()
        (tmp_path / component / "diffusion_pytorch_model.safetensors").write_bytes(b"same")
    (tmp_path / "model_index.json").write_bytes(b"{}")
    whole = weights_digest(tmp_path, "*/*")
    assert whole != weights_digest(tmp_path / "unet", "*/*")  # the unet folder alone has no sub-folders
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"diff")
    assert weights_digest(tmp_path, "*/*") != whole

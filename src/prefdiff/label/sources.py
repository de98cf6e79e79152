"""Readers for what a study is made of: `prefdiff generate` manifests (evaluation studies) and
unlabelled pairs (collection studies). They return `ComparisonSpec`s whose image paths are
relative to a registered image directory; every path is checked to stay inside it.

Generation manifest — a run directory holding `manifest.jsonl`, one JSON object per image:

    {"prompt": str, "prompt_index": int, "image_index": int, "seed": int,
     "file": "relative/path.png", "category": str | null, "model": str, "lora": str | null}

    (other keys, e.g. "unet", "steps", "guidance_scale", are allowed; "unet" joins the model
    name in the exports)

Pairs file — `pairs.jsonl`, one JSON object per pair, image paths relative to the file:

    {"prompt": str, "image_0": path, "image_1": path}    (or "chosen" / "rejected")

Pairs folder — one sub-folder per pair holding `prompt.txt` and exactly two images (taken in
sorted file-name order as image 0 and image 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from prefdiff.jsonl import json_lines
from prefdiff.label.errors import StudyError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class ComparisonSpec:
    """One comparison to create: two images (root index into `Source.roots`, relative path)."""

    prompt: str
    root_0: int
    path_0: str
    root_1: int
    path_1: str
    category: str | None = None
    prompt_index: int | None = None
    image_index: int | None = None
    seed: int | None = None
    model_0: str | None = None
    model_1: str | None = None


@dataclass(frozen=True)
class Source:
    """The image directories of a study and its comparisons."""

    roots: list[Path]
    comparisons: list[ComparisonSpec]
    run_a: str | None = None
    run_b: str | None = None
    description: dict[str, Any] | None = None


def safe_relative(root: Path, relative: str, where: str) -> str:
    """Check that `relative` names an existing image file inside `root`; return it normalised.

    Refuses absolute paths, `..` components and symlinks that lead outside `root`.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise StudyError(f"{where}: image path must be a non-empty string, got {relative!r}")
    posix = PurePosixPath(relative.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise StudyError(f"{where}: image path {relative!r} must be relative and inside {root}")
    target = (root / Path(*posix.parts)).resolve()
    if not target.is_relative_to(root):
        raise StudyError(f"{where}: image {relative!r} resolves outside {root} (symlink?)")
    if not target.is_file():
        raise StudyError(f"{where}: image file not found: {root / Path(*posix.parts)}")
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise StudyError(f"{where}: {relative!r} is not an image ({sorted(IMAGE_SUFFIXES)})")
    return posix.as_posix()


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    if not path.is_file():
        raise StudyError(f"file not found: {path}")
    rows: list[tuple[int, dict[str, Any]]] = []
    for line_no, row in json_lines(path):
        if isinstance(row, json.JSONDecodeError):
            raise StudyError(f"{path}:{line_no}: not valid JSON ({row.msg})")
        if not isinstance(row, dict):
            raise StudyError(f"{path}:{line_no}: expected a JSON object")
        rows.append((line_no, row))
    if not rows:
        raise StudyError(f"{path}: no rows")
    return rows


def _field(row: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`row[key]`, checked for presence and type."""
    if key not in row:
        raise StudyError(f"{where}: missing key {key!r}")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise StudyError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


@dataclass(frozen=True)
class ManifestImage:
    """One row of a generation manifest."""

    prompt: str
    prompt_index: int
    image_index: int
    seed: int
    file: str
    category: str | None
    model: str
    lora: str | None
    unet: str | None = None  # optional key: a tuned UNet replacing the pipeline's

    @property
    def model_label(self) -> str:
        """The model name, with the LoRA or tuned UNet when there is one."""
        label = f"{self.model}+{self.lora}" if self.lora else self.model
        return f"{label}+unet:{self.unet}" if self.unet else label


def read_manifest(run_dir: Path) -> dict[tuple[int, int], ManifestImage]:
    """Read `run_dir/manifest.jsonl`, keyed by (prompt_index, image_index)."""
    run_dir = run_dir.resolve()
    path = run_dir / MANIFEST_NAME
    images: dict[tuple[int, int], ManifestImage] = {}
    for line_no, row in _read_jsonl(path):
        where = f"{path}:{line_no}"
        category = row.get("category")
        lora = row.get("lora")
        unet = row.get("unet")
        if unet is not None and not isinstance(unet, str):
            raise StudyError(f"{where}: key 'unet' must be a string or null")
        if category is not None and not isinstance(category, str):
            raise StudyError(f"{where}: key 'category' must be a string or null")
        if lora is not None and not isinstance(lora, str):
            raise StudyError(f"{where}: key 'lora' must be a string or null")
        image = ManifestImage(
            prompt=_field(row, "prompt", str, where),
            prompt_index=_field(row, "prompt_index", int, where),
            image_index=_field(row, "image_index", int, where),
            seed=_field(row, "seed", int, where),
            file=safe_relative(run_dir, _field(row, "file", str, where), where),
            category=category,
            model=_field(row, "model", str, where),
            lora=lora,
            unet=unet,
        )
        key = (image.prompt_index, image.image_index)
        if key in images:
            raise StudyError(f"{where}: duplicate (prompt_index, image_index) = {key}")
        images[key] = image
    return images


def evaluation_source(
    run_a: Path, run_b: Path, name_a: str | None = None, name_b: str | None = None
) -> Source:
    """Comparisons of two generation runs, paired by (prompt_index, image_index).

    Refuses runs whose keys, prompts or seeds differ: the comparison must be the same prompt
    and the same starting noise, or the win rate means nothing.
    """
    images_a, images_b = read_manifest(run_a), read_manifest(run_b)
    only_a, only_b = sorted(images_a.keys() - images_b.keys()), sorted(images_b.keys() - images_a.keys())
    if only_a or only_b:
        raise StudyError(
            f"runs {run_a} and {run_b} do not hold the same (prompt_index, image_index) set: "
            f"only in A {only_a[:5]}, only in B {only_b[:5]}"
        )
    comparisons = []
    for key in sorted(images_a):
        a, b = images_a[key], images_b[key]
        if a.prompt != b.prompt:
            raise StudyError(
                f"prompt differs at (prompt_index, image_index) = {key}: {a.prompt!r} in {run_a}, "
                f"{b.prompt!r} in {run_b}"
            )
        if a.seed != b.seed:
            raise StudyError(
                f"seed differs at (prompt_index, image_index) = {key}: {a.seed} in {run_a}, "
                f"{b.seed} in {run_b}"
            )
        comparisons.append(
            ComparisonSpec(
                prompt=a.prompt, root_0=0, path_0=a.file, root_1=1, path_1=b.file,
                category=a.category if a.category is not None else b.category,
                prompt_index=a.prompt_index, image_index=a.image_index, seed=a.seed,
                model_0=a.model_label, model_1=b.model_label,
            )
        )  # fmt: skip
    return Source(
        roots=[run_a.resolve(), run_b.resolve()],
        comparisons=comparisons,
        run_a=name_a or run_a.resolve().name,
        run_b=name_b or run_b.resolve().name,
        description={"kind": "evaluation", "run_a": str(run_a), "run_b": str(run_b)},
    )


def pairs_file_source(path: Path) -> Source:
    """Unlabelled pairs from a `pairs.jsonl` (any existing chosen/rejected label is ignored)."""
    path = path.resolve()
    root = path.parent
    comparisons = []
    for line_no, row in _read_jsonl(path):
        where = f"{path}:{line_no}"
        prompt = _field(row, "prompt", str, where)
        if "image_0" in row or "image_1" in row:
            first, second = "image_0", "image_1"
        else:
            first, second = "chosen", "rejected"
        path_0 = safe_relative(root, _field(row, first, str, where), where)
        path_1 = safe_relative(root, _field(row, second, str, where), where)
        if path_0 == path_1:
            raise StudyError(f"{where}: both images are the same file {path_0!r}")
        comparisons.append(ComparisonSpec(prompt=prompt, root_0=0, path_0=path_0, root_1=0, path_1=path_1))
    return Source(roots=[root], comparisons=comparisons, description={"kind": "collection", "pairs": str(path)})


def pairs_folder_source(folder: Path) -> Source:
    """Unlabelled pairs from a folder of sub-folders, each with `prompt.txt` and two images."""
    folder = folder.resolve()
    comparisons = []
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subdirs:
        raise StudyError(f"{folder}: no sub-folders (expected one per pair)")
    for sub in subdirs:
        prompt_file = sub / "prompt.txt"
        if not prompt_file.is_file():
            raise StudyError(f"{sub}: missing prompt.txt")
        images = sorted(p.name for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(images) != 2:
            raise StudyError(f"{sub}: expected exactly two images, found {len(images)}: {images}")
        where = str(sub)
        path_0 = safe_relative(folder, f"{sub.name}/{images[0]}", where)
        path_1 = safe_relative(folder, f"{sub.name}/{images[1]}", where)
        prompt = prompt_file.read_text(encoding="utf-8").strip()
        if not prompt:
            raise StudyError(f"{prompt_file}: empty prompt")
        comparisons.append(ComparisonSpec(prompt=prompt, root_0=0, path_0=path_0, root_1=0, path_1=path_1))
    return Source(roots=[folder], comparisons=comparisons, description={"kind": "collection", "folder": str(folder)})


def collection_source(path: Path) -> Source:
    """A pairs file or a pairs folder (a folder holding `pairs.jsonl` is read as the file)."""
    if path.is_dir():
        if (path / "pairs.jsonl").is_file():
            return pairs_file_source(path / "pairs.jsonl")
        return pairs_folder_source(path)
    if path.is_file():
        return pairs_file_source(path)
    raise StudyError(f"pairs source not found: {path}")

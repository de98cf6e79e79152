"""Readers for what a study is made of: `prefdiff generate` manifests (evaluation studies) and
unlabelled pairs (collection studies). They return `ComparisonSpec`s whose image paths are
relative to a registered image directory; every path is checked to stay inside it.

Generation manifest — a run directory holding `manifest.jsonl`, read and paired by
`prefdiff.manifests` (the reader `prefdiff compare` uses too; its docstring has the format).
Its errors reach the label app as `StudyError`s.

Pairs file — `pairs.jsonl`, one JSON object per pair, image paths relative to the file:

    {"prompt": str, "image_0": path, "image_1": path}    (or "chosen" / "rejected")

Pairs folder — one sub-folder per pair holding `prompt.txt` and exactly two images (taken in
sorted file-name order as image 0 and image 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdiff import manifests
from prefdiff.label.errors import StudyError
from prefdiff.manifests import (
    IMAGE_SUFFIXES,
    MANIFEST_NAME,
    ImageKey,
    ManifestError,
    ManifestImage,
    UnpairedRunsError,
    json_objects,
    required,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MANIFEST_NAME",
    "ComparisonSpec",
    "ManifestImage",
    "Source",
    "collection_source",
    "evaluation_source",
    "pairs_file_source",
    "pairs_folder_source",
    "read_manifest",
    "safe_relative",
]


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


def _unpaired(error: UnpairedRunsError) -> StudyError:
    """The label app's wording of two runs that are not paired."""
    if error.field is None:
        return StudyError(
            f"runs {error.run_a} and {error.run_b} do not hold the same (prompt_index, image_index) set: "
            f"only in A {error.only_a[:5]}, only in B {error.only_b[:5]}"
        )
    allow = " (create-study --allow-sampler-mismatch pairs them anyway)" if error.field.startswith("sampler") else ""
    return StudyError(
        f"{error.field} differs at (prompt_index, image_index) = {error.key}: {error.value_a!r} in {error.run_a}, "
        f"{error.value_b!r} in {error.run_b}{allow}"
    )


@contextmanager
def _as_study_errors() -> Iterator[None]:
    """Report `prefdiff.manifests`' errors as `StudyError`s (a decorator too)."""
    try:
        yield
    except UnpairedRunsError as error:
        raise _unpaired(error) from None
    except ManifestError as error:
        raise StudyError(str(error)) from None


@_as_study_errors()
def safe_relative(root: Path, relative: str, where: str) -> str:
    """`prefdiff.manifests.safe_relative`: `relative` names an image file inside `root`."""
    return manifests.safe_relative(root, relative, where)


@_as_study_errors()
def read_manifest(run_dir: Path) -> dict[ImageKey, ManifestImage]:
    """Read `run_dir/manifest.jsonl`, keyed by (prompt_index, image_index)."""
    return manifests.read_manifest(run_dir)


@_as_study_errors()
def evaluation_source(
    run_a: Path,
    run_b: Path,
    name_a: str | None = None,
    name_b: str | None = None,
    allow_sampler_mismatch: bool = False,
) -> Source:
    """Comparisons of two generation runs, paired by (prompt_index, image_index).

    Refuses runs whose keys, prompts, seeds or layouts differ: the comparison must be the same
    prompt and the same starting noise, or the win rate means nothing; and runs sampled
    differently (steps, guidance, ...) unless ``allow_sampler_mismatch``.
    """
    comparisons = [
        ComparisonSpec(
            prompt=a.prompt,
            root_0=0,
            path_0=a.file,
            root_1=1,
            path_1=b.file,
            category=a.category if a.category is not None else b.category,
            prompt_index=a.prompt_index,
            image_index=a.image_index,
            seed=a.seed,
            model_0=a.model_label,
            model_1=b.model_label,
        )  # fmt: skip
        for a, b in manifests.pair_runs(run_a, run_b, allow_sampler_mismatch)
    ]
    return Source(
        roots=[run_a.resolve(), run_b.resolve()],
        comparisons=comparisons,
        run_a=name_a or run_a.resolve().name,
        run_b=name_b or run_b.resolve().name,
        description={"kind": "evaluation", "run_a": str(run_a), "run_b": str(run_b)},
    )


@_as_study_errors()
def pairs_file_source(path: Path) -> Source:
    """Unlabelled pairs from a `pairs.jsonl` (any existing chosen/rejected label is ignored)."""
    path = path.resolve()
    root = path.parent
    comparisons = []
    for line_no, row in json_objects(path):
        where = f"{path}:{line_no}"
        prompt = required(row, "prompt", str, where)
        if "image_0" in row or "image_1" in row:
            first, second = "image_0", "image_1"
        else:
            first, second = "chosen", "rejected"
        path_0 = safe_relative(root, required(row, first, str, where), where)
        path_1 = safe_relative(root, required(row, second, str, where), where)
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

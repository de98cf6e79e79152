"""Generation manifests: reading a run written by `prefdiff generate` and pairing two runs.

A run directory holds the images and ``manifest.jsonl``, one JSON object per image:

    {"prompt": str, "prompt_index": int, "image_index": int, "seed": int,
     "file": "relative/path.png", "category": str | null, "model": str, "lora": str | null}

(other keys are allowed; "unet", "init_image" and the sampler settings of :data:`SAMPLER_KEYS`
are read). Two runs are paired when they hold the same (prompt_index, image_index) set and each
key has the same prompt, seed and starting image (``init_image``, for image-to-image runs) in
both: the same prompt from the same starting noise. Runs sampled differently (another step
count, guidance, sampler, spacing or strength) are refused too unless the caller allows it: a
4-step run against a 25-step one measures the sampler as much as the model.

The one reader for `prefdiff compare`, `label-ai`, the toy and the label app. Standard library
only, so the label app (which never imports torch) uses it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from prefdiff.errors import DataError
from prefdiff.jsonl import json_lines

MANIFEST_NAME = "manifest.jsonl"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})

SAMPLER_KEYS = (
    "steps",
    "guidance_scale",
    "negative_prompt",
    "scheduler",
    "resolution",
    "timestep_spacing",
    "zero_terminal_snr",
    "strength",
    "width",
    "height",
)
"""The manifest keys that say how an image was sampled (absent counts as null, or as its
:data:`SAMPLER_DEFAULTS` entry)."""
SAMPLER_DEFAULTS: dict[str, Any] = {"zero_terminal_snr": False}

ImageKey = tuple[int, int]
"""(prompt_index, image_index)."""


class ManifestError(DataError):
    """A manifest is missing or malformed, or names an image that is not a file inside its run."""


class UnpairedRunsError(ManifestError):
    """Two runs are not paired. Either their key sets differ (``only_a``/``only_b`` are set) or
    image ``key`` has a different ``field`` (prompt or seed) in each (``value_a``, ``value_b``)."""

    def __init__(
        self,
        run_a: Path,
        run_b: Path,
        only_a: list[ImageKey] | None = None,
        only_b: list[ImageKey] | None = None,
        mismatch: tuple[ImageKey, str, Any, Any] | None = None,
        hint: str = "generate both from the same prompt file and base seed",
    ) -> None:
        self.run_a, self.run_b, self.hint = run_a, run_b, hint
        self.only_a, self.only_b = only_a or [], only_b or []
        self.key: ImageKey | None = mismatch[0] if mismatch else None
        self.field: str | None = mismatch[1] if mismatch else None
        self.value_a: Any = mismatch[2] if mismatch else None
        self.value_b: Any = mismatch[3] if mismatch else None
        super().__init__(self._message())

    def _message(self) -> str:
        prefix = f"{self.run_a} and {self.run_b} are not paired"
        if self.field is None:
            return (
                f"{prefix}: they do not hold the same (prompt_index, image_index) set: "
                f"only in A {self.only_a[:5]}, only in B {self.only_b[:5]}"
            )
        return (
            f"{prefix}: image {self.key} has {self.field} {self.value_a!r} in A and {self.value_b!r} in B ({self.hint})"
        )


@dataclass(frozen=True)
class ManifestImage:
    """One row of a generation manifest; ``file`` is relative to the run directory."""

    prompt: str
    prompt_index: int
    image_index: int
    seed: int
    file: str
    category: str | None
    model: str
    lora: str | None
    unet: str | None = None  # optional key: a tuned UNet replacing the pipeline's
    init_image: str | None = None  # optional key: the starting image of an image-to-image run
    init_image_sha256: str | None = None  # optional key: that image's content, which pairs runs
    sampler: dict[str, Any] = field(default_factory=dict, compare=False)  # the SAMPLER_KEYS present

    @property
    def key(self) -> ImageKey:
        """(prompt_index, image_index), the key that pairs runs."""
        return (self.prompt_index, self.image_index)

    @property
    def model_label(self) -> str:
        """The model name, with the LoRA or tuned UNet when there is one."""
        label = f"{self.model}+{self.lora}" if self.lora else self.model
        return f"{label}+unet:{self.unet}" if self.unet else label


ImagePairs = list[tuple[ManifestImage, ManifestImage]]
"""Paired images of run A and run B, in key order."""


def safe_relative(root: Path, relative: str, where: str) -> str:
    """Check that ``relative`` names an existing image file inside ``root``; return it normalised.

    Refuses absolute paths, ``..`` components and symlinks that lead outside ``root`` (which
    should be resolved). ``where`` (file and line) starts each error message.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise ManifestError(f"{where}: image path must be a non-empty string, got {relative!r}")
    posix = PurePosixPath(relative.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise ManifestError(f"{where}: image path {relative!r} must be relative and inside {root}")
    target = (root / Path(*posix.parts)).resolve()
    if not target.is_relative_to(root):
        raise ManifestError(f"{where}: image {relative!r} resolves outside {root} (symlink?)")
    if not target.is_file():
        raise ManifestError(f"{where}: image file not found: {root / Path(*posix.parts)}")
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise ManifestError(f"{where}: {relative!r} is not an image ({sorted(IMAGE_SUFFIXES)})")
    return posix.as_posix()


def json_objects(path: Path, missing_hint: str = "") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file; a missing file, a
    line that is not a JSON object, or a file without rows raises ``ManifestError``."""
    if not path.is_file():
        raise ManifestError(f"file not found: {path}{missing_hint}")
    rows: list[tuple[int, dict[str, Any]]] = []
    for line_no, row in json_lines(path):
        if isinstance(row, json.JSONDecodeError):
            raise ManifestError(f"{path}:{line_no}: not valid JSON ({row.msg})")
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{line_no}: expected a JSON object")
        rows.append((line_no, row))
    if not rows:
        raise ManifestError(f"{path}: no rows")
    return rows


def required(row: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``row[key]``, checked for presence and type (a bool is not an int)."""
    if key not in row:
        raise ManifestError(f"{where}: missing key {key!r}")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ManifestError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def _optional_string(row: dict[str, Any], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"{where}: key {key!r} must be a string or null")
    return value


def _image(row: dict[str, Any], run_dir: Path, where: str) -> ManifestImage:
    """One manifest row, every key checked; ``file`` must be an image inside ``run_dir``."""
    category = _optional_string(row, "category", where)
    lora = _optional_string(row, "lora", where)
    unet = _optional_string(row, "unet", where)
    init_image = _optional_string(row, "init_image", where)
    init_image_sha256 = _optional_string(row, "init_image_sha256", where)
    return ManifestImage(
        prompt=required(row, "prompt", str, where),
        prompt_index=required(row, "prompt_index", int, where),
        image_index=required(row, "image_index", int, where),
        seed=required(row, "seed", int, where),
        file=safe_relative(run_dir, required(row, "file", str, where), where),
        category=category,
        model=required(row, "model", str, where),
        lora=lora,
        unet=unet,
        init_image=init_image,
        init_image_sha256=init_image_sha256,
        sampler={key: row[key] for key in SAMPLER_KEYS if key in row},
    )


def read_manifest(run_dir: Path) -> dict[ImageKey, ManifestImage]:
    """``run_dir/manifest.jsonl`` keyed by (prompt_index, image_index); each bad row raises a
    ``ManifestError`` naming the file and line (a duplicate key too)."""
    run_dir = run_dir.resolve()
    path = run_dir / MANIFEST_NAME
    hint = f" ({run_dir}: no {MANIFEST_NAME}; make runs with `prefdiff generate`)"
    images: dict[ImageKey, ManifestImage] = {}
    for line_no, row in json_objects(path, hint):
        where = f"{path}:{line_no}"
        image = _image(row, run_dir, where)
        if image.key in images:
            raise ManifestError(f"{where}: duplicate (prompt_index, image_index) = {image.key}")
        images[image.key] = image
    return images


def _layout_check(a: ManifestImage, b: ManifestImage) -> tuple[str, Any, Any]:
    """The starting images to compare: by content when both runs recorded it, else by path."""
    if a.init_image_sha256 is not None and b.init_image_sha256 is not None:
        return ("init_image (content)", a.init_image_sha256, b.init_image_sha256)
    return ("init_image", a.init_image, b.init_image)


def pair_runs(run_a: Path, run_b: Path, allow_sampler_mismatch: bool = False) -> ImagePairs:
    """The images of two runs paired by (prompt_index, image_index), in key order.

    Refuses (``UnpairedRunsError``) runs whose key sets differ or where one key has a different
    prompt, seed or starting image: a comparison must be the same prompt from the same noise, or
    its win rate means nothing. Also refuses images sampled with different :data:`SAMPLER_KEYS`
    unless ``allow_sampler_mismatch`` (comparing a few-step model with a many-step one on purpose).
    """
    images_a, images_b = read_manifest(run_a), read_manifest(run_b)
    only_a, only_b = sorted(images_a.keys() - images_b.keys()), sorted(images_b.keys() - images_a.keys())
    if only_a or only_b:
        raise UnpairedRunsError(run_a, run_b, only_a=only_a, only_b=only_b)
    pairs: ImagePairs = []
    for key in sorted(images_a):
        a, b = images_a[key], images_b[key]
        checks = [("prompt", a.prompt, b.prompt), ("seed", a.seed, b.seed), _layout_check(a, b)]
        for name, value_a, value_b in checks:
            if value_a != value_b:
                raise UnpairedRunsError(run_a, run_b, mismatch=(key, name, value_a, value_b))
        if not allow_sampler_mismatch:
            for name in SAMPLER_KEYS:
                value_a, value_b = (image.sampler.get(name, SAMPLER_DEFAULTS.get(name)) for image in (a, b))
                if value_a != value_b:
                    hint = "sample both the same way, or allow it: compare --allow-sampler-mismatch"
                    raise UnpairedRunsError(
                        run_a, run_b, mismatch=(key, f"sampler setting {name!r}", value_a, value_b), hint=hint
                    )
        pairs.append((a, b))
    return pairs

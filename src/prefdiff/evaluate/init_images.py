"""The starting images of image-to-image generation (``prefdiff generate --init-images PATH``):
colour layouts for SDEdit (Meng et al. 2022), or any picture to edit.

``PATH`` is one of:

- an image file: every prompt starts from it;
- a folder of images: sorted by name, the ``p``-th for prompt ``p`` (as many as prompts);
- a JSON-lines file of ``{"prompt": str, "image": "relative/or/absolute/path"}`` (optional
  ``"category"``): with a prompt set, each prompt's layout is looked up by its text; without
  one, the file is the prompt set.

Every image is opened once here, so a missing or unreadable layout is named before any model
loads.
"""

from __future__ import annotations

from pathlib import Path

from prefdiff.errors import DataError
from prefdiff.evaluate.prompts import PromptItem
from prefdiff.manifests import IMAGE_SUFFIXES, json_objects, required


def _checked(path: Path, where: str) -> Path:
    """``path`` resolved, after checking that it is a readable image (decoded in full)."""
    from prefdiff.data.schema import check_image

    if not path.is_file():
        raise DataError(f"{where}: layout image not found: {path}")
    try:
        check_image(path, f"layout image {path}", mode="full")
    except ValueError as err:
        raise DataError(f"{where}: cannot read {err}") from None
    return path.resolve()


def layouts_file(path: Path) -> bool:
    """Whether ``path`` is a JSON-lines layout mapping (which can also be a prompt set)."""
    return path.suffix.lower() == ".jsonl"


def read_layout_mapping(path: Path) -> list[tuple[PromptItem, Path]]:
    """The rows of a layout JSON-lines file, each image checked; errors name the file and line."""
    rows = []
    for line_no, row in json_objects(path):
        where = f"{path}:{line_no}"
        prompt = required(row, "prompt", str, where)
        if not prompt.strip():
            raise DataError(f"{where}: empty prompt")
        image = Path(required(row, "image", str, where))
        category = row.get("category")
        if category is not None and not isinstance(category, str):
            raise DataError(f"{where}: key 'category' must be a string or null")
        rows.append(
            (PromptItem(prompt, category), _checked(image if image.is_absolute() else path.parent / image, where))
        )
    return rows


def init_images_for(path: Path, prompts: list[str]) -> list[Path]:
    """One starting image per prompt of ``prompts`` from ``path`` (a file, folder or JSON-lines
    mapping, see the module docstring)."""
    if not path.exists():
        raise DataError(f"--init-images {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) != len(prompts):
            raise DataError(
                f"--init-images {path}: {len(files)} image(s) for {len(prompts)} prompt(s); a folder needs one "
                "layout per prompt (sorted by file name), or use a JSON-lines file mapping prompts to layouts"
            )
        return [_checked(p, f"--init-images {path}") for p in files]
    if layouts_file(path):
        mapping: dict[str, Path] = {}
        for item, image in read_layout_mapping(path):
            if mapping.setdefault(item.prompt, image) != image:
                raise DataError(
                    f"{path}: prompt {item.prompt!r} is mapped to two layouts ({mapping[item.prompt]}, {image})"
                )
        missing = [p for p in prompts if p not in mapping]
        if missing:
            raise DataError(f"{path}: no layout for {len(missing)} prompt(s), e.g. {missing[0]!r}")
        return [mapping[p] for p in prompts]
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"--init-images {path}: expected an image ({', '.join(sorted(IMAGE_SUFFIXES))}), a folder of them, "
            "or a .jsonl mapping prompts to layouts"
        )
    layout = _checked(path, "--init-images")
    return [layout] * len(prompts)

"""Training recipes shipped inside the package, addressable by name, composed from parents.

A recipe is a YAML mapping of config keys (see :mod:`prefdiff.config`) in this folder, named by
its file stem: ``prefdiff train -c sd15_dpo_lora``. Two top-level keys belong to the recipe and
never reach the config:

- ``extends: PARENT`` -- start from PARENT's resolved mapping and lay this file over it. PARENT
  is a packaged recipe name (``sd15_dpo_lora``, ``_paper``) or, when it ends in ``.yaml`` or
  ``.yml``, a file path relative to the folder of the file that names it. One parent per file;
  a parent may have its own.
- ``description: TEXT`` -- the one line ``prefdiff config --list`` prints. Not inherited.

The merge rule: mappings merge key by key, recursively; any other value (a scalar, a list,
``null``) in the child replaces the parent's value whole. So a child's
``train.validation_prompts: [a cat]`` replaces the parent's list, and ``[]`` empties it.

Names that start with ``_`` are parts (``_paper``, ``_sd15``): parents shared by several
recipes, loadable by name but left out of ``--list``.

What ``--config SPEC`` reads (:func:`resolve`): an existing file is read as it is; otherwise a
bare ``NAME``, ``NAME.yaml`` or ``configs/NAME.yaml`` that names a packaged recipe is that recipe
(``configs/`` is where the recipes lived in the source tree before they moved into the package,
so commands written then keep working). Anything else is an error that lists the known names.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from prefdiff.errors import ConfigError

RECIPE_DIR = Path(__file__).resolve().parent
"""The folder of the packaged ``*.yaml`` recipes."""

_LEGACY_FOLDER = "configs"
_YAML_SUFFIXES = (".yaml", ".yml")


def list_recipes(include_parts: bool = False) -> list[str]:
    """Names of the packaged recipes, sorted; parts (``_name``) only with ``include_parts``."""
    names = sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))
    return [name for name in names if include_parts or not name.startswith("_")]


def recipe_path(name: str) -> Path:
    """The file of packaged recipe ``name``; a ConfigError listing the known names if none."""
    path = RECIPE_DIR / f"{name}.yaml"
    if not name or "/" in name or "\\" in name or not path.is_file():
        raise ConfigError(f"unknown recipe '{name}'; known recipes: {', '.join(list_recipes())}")
    return path


def describe_recipes() -> list[tuple[str, str]]:
    """(name, description) of every listed recipe, for ``prefdiff config --list``."""
    rows = []
    for name in list_recipes():
        description = _read_mapping(recipe_path(name)).get("description", "")
        rows.append((name, str(description)))
    return rows


def resolve(spec: str | Path) -> Path:
    """The file that ``--config SPEC`` means: an existing file, else a packaged recipe."""
    path = Path(spec)
    if path.is_file():
        return path
    name = _packaged_name(str(spec))
    if name is not None and name in list_recipes(include_parts=True):
        return recipe_path(name)
    known = ", ".join(list_recipes())
    if name is not None and not str(spec).endswith(_YAML_SUFFIXES):
        raise ConfigError(f"unknown recipe '{spec}' (and no such file); known recipes: {known}")
    raise ConfigError(f"config file not found: {spec} (packaged recipes, by name: {known})")


def read_recipe(spec: str | Path) -> dict[str, Any]:
    """The merged mapping of recipe ``spec`` (a name or a path) and its parents, recipe keys removed.

    Errors name the file they are about: not found, not valid YAML, not a mapping, an unknown
    parent, or a cycle of ``extends``.
    """
    return _resolve_chain(resolve(spec), ())


def merge_recipes(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` laid over ``parent``: mappings merge recursively, anything else replaces."""
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_recipes(merged[key], value)
        else:
            merged[key] = value
    return merged


def _packaged_name(spec: str) -> str | None:
    """``NAME``, ``NAME.yaml`` or ``configs/NAME.yaml`` -> NAME; None for any other shape."""
    posix = PurePosixPath(spec.replace("\\", "/"))
    if str(posix.parent) not in (".", _LEGACY_FOLDER) or not posix.name:
        return None
    if str(posix.parent) == _LEGACY_FOLDER and posix.suffix not in _YAML_SUFFIXES:
        return None
    return posix.stem if posix.suffix in _YAML_SUFFIXES else posix.name


def _resolve_chain(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """Read ``path``, resolve its parent first (``chain``: the files that extend it), merge."""
    key = path.resolve()
    if key in chain:
        names = " -> ".join(p.name for p in (*chain, key))
        raise ConfigError(f"{chain[-1]}: extends cycle: {names}")
    data = _read_mapping(path)
    parent = data.pop("extends", None)
    data.pop("description", None)
    if parent is None:
        return data
    return merge_recipes(_resolve_chain(_parent_path(path, parent), (*chain, key)), data)


def _parent_path(path: Path, parent: Any) -> Path:
    """The file that ``extends: parent`` in ``path`` names."""
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: 'extends' must be one recipe name or a .yaml path, got {parent!r}")
    if parent.endswith(_YAML_SUFFIXES):
        target = path.parent / parent
        if not target.is_file():
            raise ConfigError(f"{path}: extends '{parent}': file not found: {target}")
        return target
    try:
        return recipe_path(parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: extends '{parent}': {err}") from None


def _read_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of one YAML file (an empty file is an empty mapping)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save the recipe as UTF-8"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError(f"{path}: 'description' must be one line of text, got {description!r}")
    return data


__all__ = ["RECIPE_DIR", "describe_recipes", "list_recipes", "merge_recipes", "read_recipe", "recipe_path", "resolve"]

"""What a pip user gets: the wheel built from a clean checkout, installed into a fresh venv.

The checkout is ``git archive HEAD`` (committed files only, so a file that was never added is
missing here too). The wheel is built with the running interpreter's pip and setuptools
(``--no-build-isolation``, no network needed for the build). The venv is new and has no access
to the development environment's packages: pip installs ``torch==2.13.0`` first (the CPU wheel;
prefdiff only asks for a floor, which it satisfies), then the wheel with all its dependencies,
with ``--no-compile``: byte-compiling all of torch and transformers is a large share of install
time (measured on 2 cores: torch 58 s -> 27 s), and the first command then compiles and caches
only the modules it imports (so the commands run without PYTHONDONTWRITEBYTECODE). Downloads come
from pip's cache when it is warm. About 3 minutes in all on 2 cores.
Then, from a directory that has nothing of the repository, the commands of the tiny recipe's
header run as written, with a 2-step budget.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"


def run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    """Run ``command``; fail the test with its output if it exits non-zero."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def clean_checkout(destination: Path) -> Path:
    """The committed tree at HEAD, unpacked into ``destination``."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no HEAD to build the wheel from")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "HEAD"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    return destination


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clean_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def wheel(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(checkout),
        ]
    )
    (built,) = dist.glob("prefdiff-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the CPU torch, then the wheel and its dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile"]
    run([*pip, TORCH])
    run([*pip, str(wheel)])
    return venv / "bin"


def user_env(venv_bin: Path) -> dict[str, str]:
    """The environment a user of the venv has: none of the development checkout's paths."""
    dropped = (
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "PYTHONDONTWRITEBYTECODE",
    )  # with --no-compile, let imports cache
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_wheel_ships_every_file_of_the_package(checkout: Path, wheel: Path):
    """Recipes (parts too), toy assets, label templates: every committed file under src/prefdiff."""
    tracked = {
        p.relative_to(checkout / "src").as_posix() for p in (checkout / "src" / "prefdiff").rglob("*") if p.is_file()
    }
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "prefdiff/recipes/tiny_dpo_lora.yaml",
        "prefdiff/recipes/_paper.yaml",
        "prefdiff/toy/assets/base/model_index.json",
        "prefdiff/toy/assets/base_sd3/model_index.json",
        "prefdiff/toy/assets/base_sd3/transformer/diffusion_pytorch_model.safetensors",
        "prefdiff/toy/assets/base_sd3/tokenizer_3/tokenizer_config.json",
    } <= tracked
    assert tracked - shipped == set()


def test_wheel_asks_for_a_torch_floor_not_a_pin(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        requires = [
            line for line in archive.read(metadata).decode().splitlines() if line.startswith("Requires-Dist: torch")
        ]
    assert requires == ["Requires-Dist: torch>=2.6"]


def test_installed_wheel_runs_the_tiny_recipe_as_written_from_elsewhere(venv_bin: Path, tmp_path: Path):
    env = user_env(venv_bin)
    where = run(
        [str(venv_bin / "python"), "-c", "import prefdiff, torch; print(prefdiff.__file__); print(torch.__version__)"],
        tmp_path,
        env,
    )
    module_file, torch_version = where.split()
    assert Path(module_file).is_relative_to(venv_bin.parent), module_file
    assert torch_version == "2.13.0+cpu"

    prefdiff = str(venv_bin / "prefdiff")
    assert "tiny_dpo_lora" in run([prefdiff, "config", "--list"], tmp_path, env)
    assert "output_dir: runs/sd15_dpo_lora" in run(
        [prefdiff, "config", "-c", "configs/sd15_dpo_lora.yaml"], tmp_path, env
    )
    run([prefdiff, "make-tiny", "--out", "runs/tiny_sd"], tmp_path, env)
    run([prefdiff, "toy", "shapes", "--out", "runs/data/shapes.parquet", "--rows", "16"], tmp_path, env)
    run(
        [
            prefdiff,
            "train",
            "--config",
            "tiny_dpo_lora",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.checkpoint_every=0",
            "train.validation_prompts=[]",
            "train.report_to=none",
        ],
        tmp_path,
        env,
    )
    assert (tmp_path / "runs" / "tiny_dpo_lora" / "lora" / "pytorch_lora_weights.safetensors").is_file()

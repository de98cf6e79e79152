"""Generate PNGs from a pipeline directory, optionally with a LoRA or a fully tuned denoiser.

Two ways in: explicit prompts and seeds (``prefdiff generate --prompt ... --seed ...``), or a
benchmark prompt file (``--prompts FILE --images-per-prompt N``) where image ``i`` of prompt
``p`` gets the seed :func:`paired_seed` ``(base_seed, p, i)``: two models run on the same file
start from the same noise. Images already on disk are skipped (resume). Beside the images,
``manifest.jsonl`` holds one record per image: prompt, prompt_index, image_index, seed, file,
category, model, lora, unet (the tuned denoiser directory, UNet or transformer) and the sampler
settings (the format the label app reads).

With ``init_images`` (``--init-images PATH --strength S``) every image starts from a given
picture, a colour layout for SDEdit: the family's image-to-image pipeline, built from the same
components with ``from_pipe`` (nothing is loaded twice), noises the layout to ``strength`` and
denoises it for ``int(steps * strength)`` steps. The manifest records ``init_image`` per image
and ``strength``; strength 0 adds no noise and takes no step, so the image is the layout itself,
resized.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

from prefdiff.devices import process_state
from prefdiff.errors import ConfigError, ModelLoadError
from prefdiff.models import load_backbone

SCHEDULERS = {
    "default": None,
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
}


TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class SamplerSettings:
    """How every image of a run is sampled; all of it goes into the manifest, and two runs are
    compared only when these agree (``prefdiff.manifests.SAMPLER_KEYS``).

    ``steps`` and ``guidance_scale`` None take the pipeline's own defaults
    (:meth:`with_pipeline_defaults`: 50 steps for SD and SDXL, 28 for SD3 and FLUX.1; guidance
    7.5, 5.0, 7.0 and 3.5). ``timestep_spacing`` None keeps the pipeline scheduler's own
    (SDXL-Turbo's is trailing: 4 steps are 999, 749, 499, 249); ``zero_terminal_snr`` samples
    with the rescaled schedule a run trained with ``model.zero_terminal_snr`` used;
    ``strength`` is set for image-to-image runs only. ``width`` and ``height`` make an image
    that is not square: each replaces ``resolution`` (or the native size) on its side."""

    steps: int | None = None
    guidance_scale: float | None = None
    resolution: int | None = None
    negative_prompt: str | None = None
    scheduler: str = "default"
    timestep_spacing: str | None = None
    zero_terminal_snr: bool = False
    strength: float | None = None
    width: int | None = None
    height: int | None = None

    def with_pipeline_defaults(self, model: Path) -> SamplerSettings:
        """These settings with an unset ``steps`` or ``guidance_scale`` taken from the defaults of
        the text-to-image pipeline ``model`` is (read from its ``__call__``, so they follow
        diffusers): SDXL gets its base model's refiner-free sampling, 50 steps at guidance 5.0."""
        if self.width is not None and self.width == self.height:  # square after all: one size, as --resolution
            return replace(self, resolution=self.width, width=None, height=None).with_pipeline_defaults(model)
        if self.steps is not None and self.guidance_scale is not None:
            return self
        from prefdiff.models import backbone_class

        parameters = inspect.signature(backbone_class(model).pipeline_class().__call__).parameters
        return replace(
            self,
            steps=self.steps if self.steps is not None else int(parameters["num_inference_steps"].default),
            guidance_scale=(
                self.guidance_scale if self.guidance_scale is not None else float(parameters["guidance_scale"].default)
            ),
        )

    def check(self) -> None:
        """Clear errors for settings no pipeline can run (after :meth:`with_pipeline_defaults`)."""
        if self.steps is None or self.guidance_scale is None:
            raise ValueError("resolve the pipeline's defaults (with_pipeline_defaults) before checking")
        if self.steps < 1:
            raise ConfigError(f"--steps must be >= 1 (got {self.steps})")
        for name, value in (("--resolution", self.resolution), ("--width", self.width), ("--height", self.height)):
            if value is not None and (value < 8 or value % 8):
                raise ConfigError(f"{name} must be a multiple of 8 of at least 8 pixels (got {value})")
        if self.timestep_spacing is not None and self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ConfigError(
                f"--timestep-spacing {self.timestep_spacing!r}: expected one of {', '.join(TIMESTEP_SPACINGS)}"
            )
        if self.strength is not None:
            if not 0.0 <= self.strength <= 1.0:
                raise ConfigError(f"--strength must be in [0, 1] (got {self.strength})")
            if self.strength > 0 and int(self.steps * self.strength) < 1:
                raise ConfigError(
                    f"--strength {self.strength} with --steps {self.steps} runs no denoising step "
                    f"(int({self.steps} * {self.strength}) = 0): raise either, or use --strength 0 to keep the layout"
                )

    def recorded(self) -> dict[str, Any]:
        """The manifest's sampler fields; the image-to-image and few-step ones only when set, so a
        text-to-image manifest reads as it always has."""
        fields = asdict(self)
        optional = (("timestep_spacing", None), ("zero_terminal_snr", False), ("strength", None))
        for key, unset in (*optional, ("width", None), ("height", None)):
            if fields[key] == unset:
                fields.pop(key)
        return fields


@dataclass
class Placement:
    """Where and how a generation run executes; none of it changes which noise an image starts
    from (that is the job's seed, drawn by a CPU generator). ``device`` auto is the GPU when
    there is one (under ``accelerate launch``, each process's own), ``dtype`` the weights' and
    activations' precision, and the two memory savers are the pipeline's own."""

    device: str = "auto"
    dtype: str = "fp32"
    attention_slicing: bool = False
    vae_tiling: bool = False

    def resolve(self, process_device: torch.device | None = None) -> tuple[torch.device, torch.dtype]:
        from prefdiff.devices import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        if process_device is not None and (self.device == "auto" or self.device == "cuda"):
            device = process_device  # accelerate's device for this process (cuda:LOCAL_RANK, or the CPU)
        return device, resolve_dtype(self.dtype, device)

    def recorded(self, device: torch.device) -> dict[str, Any]:
        return {"device": str(device), "dtype": self.dtype}


@dataclass
class Job:
    prompt: str
    prompt_index: int
    image_index: int
    seed: int
    file: str
    category: str | None = None
    init_image: str | None = None  # the starting image of an image-to-image run (resolved path)


def paired_seed(base_seed: int, prompt_index: int, image_index: int) -> int:
    """A 31-bit seed for image ``image_index`` of prompt ``prompt_index``."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_index}:{image_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def load_generation_pipeline(
    model: Path,
    lora: Path | None = None,
    denoiser: Path | None = None,
    settings: SamplerSettings | None = None,
    placement: Placement | None = None,
    process_device: torch.device | None = None,
) -> tuple[DiffusionPipeline, int, dict[str, Any]]:
    """A diffusers pipeline for ``model`` with ``lora`` loaded or its denoiser (UNet or
    transformer) replaced by the fully tuned one in ``denoiser``; returns the pipeline, its
    native resolution and the keyword arguments every call of it takes so that prompts are
    encoded as the latent cache encodes them (the T5 prompt length of the flow families).
    ``settings`` adds the timestep spacing, the zero-terminal-SNR schedule and, with a
    strength, the family's image-to-image pipeline over the same components. ``placement``
    moves it to its device and precision (default: the GPU when there is one, fp32) and turns on
    the memory savers it names."""
    import diffusers

    from prefdiff.config import ModelConfig

    settings = settings or SamplerSettings()
    placement = placement or Placement()
    device, dtype = placement.resolve(process_device)  # a missing GPU is one line before any loading
    scheduler = settings.scheduler
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
    try:
        backbone = load_backbone(model, ModelConfig(zero_terminal_snr=settings.zero_terminal_snr))
    except ConfigError as err:  # said in the flag's name: generate has no config keys
        if not settings.zero_terminal_snr:
            raise
        raise ConfigError(f"--zero-terminal-snr: {str(err).split(': ', 1)[-1]}") from None
    for name, value, unset in (
        ("--scheduler", scheduler, "default"),
        ("--timestep-spacing", settings.timestep_spacing, None),
    ):
        if value != unset and backbone.flow_matching:
            raise ConfigError(
                f"{name} {value!r}: {backbone.family} pipelines sample a flow with their "
                "FlowMatchEulerDiscreteScheduler and its own sigmas; this option is for the UNet families"
            )
    tuned = None
    if denoiser is not None:
        if not (denoiser / "config.json").is_file():
            raise ModelLoadError(f"--denoiser {denoiser}: not a {backbone.denoiser_name} directory (no config.json)")
        tuned = backbone.load_denoiser(denoiser)
    pipe = backbone.pipeline(denoiser=tuned)
    scheduler_class = SCHEDULERS[scheduler]
    if scheduler_class is not None:
        chosen = getattr(diffusers, scheduler_class)
        if settings.zero_terminal_snr and "rescale_betas_zero_snr" not in inspect.signature(chosen.__init__).parameters:
            raise ConfigError(
                f"--scheduler {scheduler!r} has no zero-terminal-SNR schedule; drop --zero-terminal-snr or pick another"
            )
        pipe.scheduler = chosen.from_config(pipe.scheduler.config)
    if settings.timestep_spacing is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, timestep_spacing=settings.timestep_spacing
        )
    if lora is not None:
        if not (lora / "pytorch_lora_weights.safetensors").is_file():
            raise ModelLoadError(f"--lora {lora}: no pytorch_lora_weights.safetensors in this directory")
        pipe.load_lora_weights(str(lora))
    if settings.strength is not None:
        pipe = backbone.image_to_image_pipeline(pipe)
    pipe.set_progress_bar_config(disable=True)
    _place(pipe, placement, device, dtype)
    return pipe, backbone.native_resolution(), backbone.encoding_settings()


@torch.no_grad()
def run_jobs(
    jobs: list[Job],
    out: Path,
    model: Path,
    lora: Path | None,
    denoiser: Path | None,
    settings: SamplerSettings,
    batch_size: int = 4,
    placement: Placement | None = None,
) -> list[Path]:
    """Generate the jobs whose file is missing, ``batch_size`` images per pipeline call, and
    write ``manifest.jsonl`` for all of them. ``settings`` were checked by the caller
    (:func:`_check_request`, before any layout is read).

    Under ``accelerate launch`` (or torchrun) with several processes, process ``r`` of ``n``
    generates every ``n``-th missing image from the ``r``-th; all wait, then the main process
    writes the one manifest. Every image comes from its own seed, so the images do not depend on
    the batch size or the process count."""
    from tqdm.auto import tqdm

    placement = placement or Placement()
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {batch_size})")
    state = process_state()
    out.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if not (out / job.file).exists()]
    if len(todo) < len(jobs):
        _check_same_request(out, model, lora, denoiser, settings)
    if state is not None:
        state.wait_for_everyone()  # every process has listed the same missing images before any is written
        todo = todo[state.process_index :: state.num_processes]
    size = settings.resolution
    process_device = state.device if state is not None else None
    device, _ = placement.resolve(process_device)
    main = state is None or state.is_main_process
    if todo:
        pipe, native, prompt_settings = load_generation_pipeline(
            model, lora, denoiser, settings=settings, placement=placement, process_device=process_device
        )
        size = size or native
        for start in tqdm(
            range(0, len(todo), batch_size),
            desc="generate",
            unit="batch",
            disable=len(todo) <= batch_size or not main,
        ):
            batch = todo[start : start + batch_size]
            for job, image in zip(batch, _sample(pipe, batch, settings, size, prompt_settings), strict=True):
                image.save(out / job.file)
    if state is not None:
        state.wait_for_everyone()
    if not main:
        state.wait_for_everyone()  # until the main process has written the manifest
        return [out / job.file for job in jobs]
    if size is None:  # nothing was left to make here: the size the run was made at
        size = _recorded_size(out, model)
    common: dict[str, Any] = {
        "model": str(model),
        "lora": str(lora) if lora else None,
        "unet": str(denoiser) if denoiser else None,  # the tuned denoiser (UNet or transformer)
        **{k: v for k, v in settings.recorded().items() if k != "resolution"},
        "resolution": size,
        **placement.recorded(device),
    }
    layout_digests = {job.init_image: _file_sha256(Path(job.init_image)) for job in jobs if job.init_image}
    with (out / "manifest.jsonl").open("w") as f:
        for job in jobs:
            row = asdict(job)
            if job.init_image is None:
                row.pop("init_image")
            else:  # runs are paired on the layout's content, wherever it is stored
                row["init_image_sha256"] = layout_digests[job.init_image]
            f.write(json.dumps({**row, **common}) + "\n")
    if state is not None:
        state.wait_for_everyone()  # the others read nothing before the manifest is whole
    return [out / job.file for job in jobs]


def _check_same_request(
    out: Path, model: Path, lora: Path | None, denoiser: Path | None, settings: SamplerSettings
) -> None:
    """A rerun into a folder that already holds images must ask for them as they were made
    (the same weights and sampler settings, as its manifest records), or the folder would mix
    two runs under one manifest; refused naming the first setting that differs."""
    from prefdiff.manifests import SAMPLER_DEFAULTS, SAMPLER_KEYS

    manifest = out / "manifest.jsonl"
    if not manifest.is_file():
        return
    first = next((line for line in manifest.read_text().splitlines() if line.strip()), None)
    if first is None:
        return
    made = json.loads(first)
    asked: dict[str, Any] = {
        "model": str(model),
        "lora": str(lora) if lora else None,
        "unet": str(denoiser) if denoiser else None,
        **settings.recorded(),
    }
    keys = ["model", "lora", "unet", *SAMPLER_KEYS]
    if settings.resolution is None:
        keys.remove("resolution")  # the native size, settled when the pipeline loads
    for key in keys:
        before, now = made.get(key, SAMPLER_DEFAULTS.get(key)), asked.get(key, SAMPLER_DEFAULTS.get(key))
        if key in ("model", "lora", "unet") and before is not None and now is not None:
            same = Path(before).resolve() == Path(now).resolve()  # however the path was spelt
        else:
            same = before == now
        if not same:
            flag = {"unet": "denoiser"}.get(key, key).replace("_", "-")
            raise ConfigError(
                f"{out} already holds images made with {key}={before!r} ({manifest}); this run asks for "
                f"{key}={now!r}: write to a new --out, or rerun with --{flag} as before to finish that run"
            )


def _place(pipe: Any, placement: Placement, device: torch.device, dtype: torch.dtype) -> None:
    pipe.to(device, dtype)
    if placement.attention_slicing:
        pipe.enable_attention_slicing()
    if placement.vae_tiling:
        pipe.vae.enable_tiling()


def _recorded_size(out: Path, model: Path) -> int | None:
    """The resolution an existing manifest records (a rerun that made nothing keeps it), else the
    pipeline's native size."""
    manifest = out / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            if line.strip():
                recorded = json.loads(line).get("resolution")
                if recorded is not None:
                    return int(recorded)
                break
    return load_backbone(model).native_resolution()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _layout(job: Job, width: int, height: int) -> Image.Image:
    from PIL import Image

    from prefdiff.data.schema import open_image

    assert job.init_image is not None
    layout = open_image(Path(job.init_image), f"layout {job.init_image}")
    return layout.resize((width, height), Image.Resampling.BICUBIC)


def _sample(
    pipe: Any, batch: list[Job], settings: SamplerSettings, size: int, prompt_settings: dict[str, Any]
) -> list[Image.Image]:
    """One pipeline call for ``batch``: each image from its own seed's generator (so batching
    does not change it), from its layout when the run is image-to-image; ``size`` on each side
    that ``settings.width`` / ``height`` leave unset."""
    width, height = settings.width or size, settings.height or size
    if settings.strength == 0:
        return [_layout(job, width, height) for job in batch]  # no noise added, no step taken
    call: dict[str, Any] = {
        "negative_prompt": [settings.negative_prompt] * len(batch) if settings.negative_prompt else None,
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "generator": [torch.Generator(device="cpu").manual_seed(job.seed) for job in batch],
        **prompt_settings,
    }
    if settings.strength is not None:
        call.update(image=[_layout(job, width, height) for job in batch], strength=settings.strength)
    if settings.strength is None or "height" in inspect.signature(pipe.__call__).parameters:
        # SD and SDXL image-to-image take the size from the (resized) layout; SD3 and FLUX resize
        # it to their default size unless told
        call.update(height=height, width=width)
    return list(pipe([job.prompt for job in batch], **call).images)


def _check_request(settings: SamplerSettings, init_images: Path | None) -> None:
    settings.check()
    if (settings.strength is None) != (init_images is None):
        raise ConfigError("--init-images and --strength go together: give both for image-to-image, or neither")


def _with_layouts(
    jobs: list[Job], init_images: Path | None, prompts: list[str], layouts: list[Path] | None = None
) -> list[Job]:
    """``jobs`` with each one's starting image (one per prompt index): ``layouts`` when given,
    else looked up in ``init_images`` for ``prompts``."""
    if init_images is None:
        return jobs
    from prefdiff.evaluate.init_images import init_images_for

    layouts = layouts if layouts is not None else init_images_for(init_images, prompts)
    return [replace(job, init_image=str(layouts[job.prompt_index])) for job in jobs]


def generate_pngs(
    model: Path,
    prompts: list[str],
    seeds: list[int],
    out: Path,
    lora: Path | None = None,
    denoiser: Path | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    resolution: int | None = None,
    negative_prompt: str | None = None,
    scheduler: str = "default",
    batch_size: int = 4,
    settings: SamplerSettings | None = None,
    init_images: Path | None = None,
    placement: Placement | None = None,
) -> list[Path]:
    """One PNG per (prompt, seed), named ``p{prompt_index:04d}_s{seed}.png``; ``settings``, when
    given, replaces the separate sampler arguments; ``init_images`` makes it image-to-image."""
    jobs = [
        Job(prompt, p, i, seed, f"p{p:04d}_s{seed}.png")
        for p, prompt in enumerate(prompts)
        for i, seed in enumerate(seeds)
    ]
    settings = settings or SamplerSettings(steps, guidance_scale, resolution, negative_prompt, scheduler)
    settings = settings.with_pipeline_defaults(model)
    _check_request(settings, init_images)
    jobs = _with_layouts(jobs, init_images, prompts)
    return run_jobs(jobs, out, model, lora, denoiser, settings, batch_size, placement)


def generate_prompt_set(
    model: Path,
    prompts_file: Path | None,
    images_per_prompt: int,
    out: Path,
    lora: Path | None = None,
    denoiser: Path | None = None,
    settings: SamplerSettings | None = None,
    base_seed: int = 0,
    batch_size: int = 4,
    init_images: Path | None = None,
    placement: Placement | None = None,
) -> list[Path]:
    """``images_per_prompt`` PNGs per prompt of ``prompts_file``, named ``p{p:05d}_i{i:03d}.png``,
    seeded by :func:`paired_seed`. With ``init_images``, each prompt starts from its layout;
    a JSON-lines layout mapping without a ``prompts_file`` (or given as both) is itself the
    prompt set, row ``p`` being prompt ``p`` with its layout."""
    from prefdiff.evaluate.init_images import layouts_file, read_layout_mapping
    from prefdiff.evaluate.prompts import read_prompts

    if images_per_prompt < 1:
        raise ConfigError(f"--images-per-prompt must be >= 1 (got {images_per_prompt})")
    settings = (settings or SamplerSettings()).with_pipeline_defaults(model)
    _check_request(settings, init_images)
    layouts = None
    same_file = prompts_file is None or init_images is not None and prompts_file.resolve() == init_images.resolve()
    if init_images is not None and layouts_file(init_images) and same_file:  # row p: prompt p and its layout
        rows = read_layout_mapping(init_images)
        items, layouts = [item for item, _ in rows], [image for _, image in rows]
    elif prompts_file is not None:
        items = read_prompts(prompts_file)
    else:
        raise ConfigError("give a prompt set (--prompts FILE), or --init-images a .jsonl mapping prompts to layouts")
    jobs = [
        Job(item.prompt, p, i, paired_seed(base_seed, p, i), f"p{p:05d}_i{i:03d}.png", item.category)
        for p, item in enumerate(items)
        for i in range(images_per_prompt)
    ]
    jobs = _with_layouts(jobs, init_images, [item.prompt for item in items], layouts)
    return run_jobs(jobs, out, model, lora, denoiser, settings, batch_size, placement)

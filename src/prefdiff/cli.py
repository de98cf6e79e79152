"""The one `prefdiff` command. Heavy imports (torch, diffusers) live inside each sub-command
so that `prefdiff --help` and the label app stay fast and torch-free."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from prefdiff.devices import DEVICE_HELP, DTYPE_HELP
from prefdiff.evaluate.scorers.registry import KINDS as SCORER_KINDS  # torch-free
from prefdiff.label.cli import app as label_app

SCORER_KINDS_HELP = ", ".join("python:module:function" if kind == "python" else kind for kind in SCORER_KINDS)

app = typer.Typer(
    help="prefdiff: align text-to-image diffusion models with human preferences.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(label_app, name="label")

STEPS_HELP = "Sampler steps (default: the pipeline's own, 50 for SD and SDXL, 28 for SD3 and FLUX.1)."
GUIDANCE_HELP = (
    "Classifier-free guidance scale (default: the pipeline's own, 7.5 for SD, 5.0 for SDXL base without a refiner, "
    "7.0 for SD3, 3.5 for FLUX.1)."
)
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted config overrides, e.g. optim.lr=1e-6 objective.beta=2500 train.max_steps=100."),
]


def _quiet_libraries() -> None:
    """Keep the console for prefdiff's own progress: silence library chatter and download hints."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("transformers", "diffusers", "accelerate", "peft", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


@app.command()
def version() -> None:
    """Print the package version."""
    from prefdiff import __version__

    typer.echo(__version__)


@app.command()
def train(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="A packaged recipe name (`prefdiff config --list`) or a YAML file."),
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="'latest' (newest checkpoint in output_dir) or a checkpoint directory.")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="output_dir holds an earlier run: remove it and start afresh (refused without this)."),
    ] = False,
    overrides: Overrides = None,
) -> None:
    """Train with Diffusion-DPO (or SFT) on a diffusers pipeline directory."""
    _quiet_libraries()
    from prefdiff.config import load_config
    from prefdiff.train.loop import train as run_training

    cfg = load_config(config, overrides or [])
    result = run_training(cfg, resume=resume, overwrite=overwrite)
    typer.echo(f"done: {result.state.global_step} steps; weights in {result.final_weights}")


@app.command("config")
def show_config(
    config: Annotated[str | None, typer.Option("--config", "-c", help="A recipe name or YAML file to resolve.")] = None,
    reference: Annotated[bool, typer.Option(help="List every key with its default and help text.")] = False,
    list_recipes: Annotated[
        bool, typer.Option("--list", help="List the packaged recipes with a line about each.")
    ] = False,
    overrides: Overrides = None,
) -> None:
    """Print the resolved config (defaults <- recipe <- overrides), the key reference, or the recipes."""
    from prefdiff.config import describe, dump_yaml, load_config

    if list_recipes:
        _echo_recipes()
        return
    if reference:
        for key, default, help_text in describe():
            typer.echo(f"{key} = {default}\n    {help_text}")
        return
    typer.echo(dump_yaml(load_config(config, overrides or [])), nl=False)


def _echo_recipes() -> None:
    """One line per packaged recipe: its name, padded, and its description."""
    from prefdiff.recipes import describe_recipes

    rows = describe_recipes()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        typer.echo(f"{name:<{width}}  {description}".rstrip())


@app.command("make-tiny")
def make_tiny(
    out: Annotated[Path, typer.Option(help="Directory to write the pipeline to.")],
    family: Annotated[
        str,
        typer.Option(
            help="A registered model family: sd (StableDiffusionPipeline), sdxl (StableDiffusionXLPipeline), sd3 "
            "(StableDiffusion3Pipeline), flux (FluxPipeline)."
        ),
    ] = "sd",
    prediction_type: Annotated[
        str, typer.Option(help="'epsilon' or 'v_prediction' (the UNet families; sd3 and flux predict the velocity).")
    ] = "epsilon",
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
) -> None:
    """Build a random-init tiny pipeline of a model family offline and save it in diffusers format."""
    _quiet_libraries()
    from prefdiff.errors import PrefdiffError
    from prefdiff.models.base import BACKBONES
    from prefdiff.models.tiny import build_tiny_pipeline

    if family not in BACKBONES:
        raise PrefdiffError(f"--family {family!r}: expected one of {', '.join(BACKBONES.names())}")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise PrefdiffError(f"--prediction-type {prediction_type!r}: expected 'epsilon' or 'v_prediction'")
    build_tiny_pipeline(out, family, prediction_type, seed)
    typer.echo(f"tiny {family} pipeline written to {out}")


@app.command()
def generate(
    model: Annotated[Path, typer.Option(help="A diffusers pipeline directory.")],
    out: Annotated[Path, typer.Option(help="Directory for the PNGs and manifest.jsonl.")],
    prompt: Annotated[
        list[str] | None, typer.Option(help="Prompt text (repeat for several); or use --prompts.")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="A prompt set: .txt (a line each), .tsv (PartiPrompts), .json (list), .jsonl (prompt field)."
        ),
    ] = None,
    images_per_prompt: Annotated[
        int, typer.Option(help="With --prompts: images per prompt, seeded by (prompt index, image index).")
    ] = 1,
    lora: Annotated[Path | None, typer.Option(help="A LoRA directory written by `prefdiff train`.")] = None,
    denoiser: Annotated[
        Path | None,
        typer.Option(
            "--denoiser",
            "--unet",
            help="A fully tuned denoiser directory written by `prefdiff train` with lora.enabled=false "
            "(RUN/unet or RUN/transformer).",
        ),
    ] = None,
    seed: Annotated[
        list[int] | None,
        typer.Option(help="With --prompt: seed(s), one image per prompt and seed. With --prompts: the base seed."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help=STEPS_HELP)] = None,
    guidance_scale: Annotated[float | None, typer.Option(help=GUIDANCE_HELP)] = None,
    resolution: Annotated[
        int | None, typer.Option(help="Image size in pixels, square (default: the denoiser's native size).")
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="Image width in pixels, for images that are not square (default: --resolution).")
    ] = None,
    height: Annotated[
        int | None, typer.Option(help="Image height in pixels, for images that are not square (default: --resolution).")
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="Negative prompt.")] = None,
    scheduler: Annotated[
        str, typer.Option(help="Sampler: default (the pipeline's), ddim, euler, euler_a, dpmpp, pndm.")
    ] = "default",
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call.")] = 4,
    timestep_spacing: Annotated[
        str | None,
        typer.Option(
            help="UNet families: the sampler's timestep spacing, leading, trailing or linspace (default: the "
            "scheduler's own). Few-step models such as SDXL-Turbo sample with trailing."
        ),
    ] = None,
    zero_terminal_snr: Annotated[
        bool,
        typer.Option(help="Sample with the zero-terminal-SNR schedule (a run trained with model.zero_terminal_snr)."),
    ] = False,
    init_images: Annotated[
        Path | None,
        typer.Option(
            help="Image-to-image (SDEdit): start every image from a layout: an image file, a folder (one per prompt, "
            "sorted), or a .jsonl of {prompt, image} (then --prompts may be left out). Needs --strength."
        ),
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option(help="With --init-images: how far the layout is noised, 0 (kept) to 1 (pure noise)."),
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "fp32",
    attention_slicing: Annotated[
        bool, typer.Option(help="The pipeline's attention slicing: less memory, a little slower.")
    ] = False,
    vae_tiling: Annotated[
        bool, typer.Option(help="Decode in tiles (the VAE's own tiling): large images in less memory.")
    ] = False,
) -> None:
    """Generate PNGs from a pipeline (optionally with trained LoRA weights or a tuned denoiser), for
    explicit prompts and seeds or for a whole prompt set with paired seeds, from noise or from
    layout images (--init-images). Resumable."""
    _quiet_libraries()
    from prefdiff.errors import PrefdiffError
    from prefdiff.evaluate.generate import Placement, SamplerSettings, generate_pngs, generate_prompt_set
    from prefdiff.evaluate.init_images import layouts_file

    placement = Placement(device, dtype, attention_slicing, vae_tiling)
    placement.resolve()  # an unavailable device or precision: one line, before any work

    layouts_are_prompts = init_images is not None and layouts_file(init_images) and prompt is None
    if prompt is not None and prompts is not None or (prompt is None and prompts is None and not layouts_are_prompts):
        raise PrefdiffError("give either --prompt (one or more) or --prompts FILE (or --init-images a .jsonl)")
    settings = SamplerSettings(
        steps, guidance_scale, resolution, negative_prompt, scheduler, timestep_spacing, zero_terminal_snr, strength,
        width, height,
    )  # fmt: skip
    if prompt is None:
        base_seed = (seed or [0])[0]
        paths = generate_prompt_set(
            model,
            prompts,
            images_per_prompt,
            out,
            lora,
            denoiser,
            settings,
            base_seed,
            batch_size,
            init_images,
            placement,
        )
    else:
        paths = generate_pngs(
            model,
            prompt,
            seed or [0],
            out,
            lora=lora,
            denoiser=denoiser,
            batch_size=batch_size,
            settings=settings,
            init_images=init_images,
            placement=placement,
        )
    typer.echo(f"{len(paths)} image(s) in {out} (manifest.jsonl beside them)")


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="A folder written by `prefdiff generate` (the candidate).")],
    run_b: Annotated[Path, typer.Argument(help="The same prompt set and seeds from another model (the baseline).")],
    scorer: Annotated[
        str, typer.Option(help=f"KIND:PATH with a registered kind ({SCORER_KINDS_HELP}) or a mix 0.7*A+0.3*B.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for summary.json, scores.jsonl and report.html.")],
    tie_margin: Annotated[float, typer.Option(help="Score differences within this margin count as ties.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Images per scorer call.")] = 16,
    device: Annotated[str, typer.Option(help="Where the scorer runs: " + DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help="The scorer's precision: " + DTYPE_HELP)] = "fp32",
    allow_sampler_mismatch: Annotated[
        bool,
        typer.Option(
            help="Pair runs sampled differently (steps, guidance, scheduler, spacing, strength), e.g. a 4-step "
            "model against a 25-step one; refused by default."
        ),
    ] = False,
) -> None:
    """Paired win rate of RUN_A over RUN_B by a reward model, with error bars, and an HTML report."""
    _quiet_libraries()
    from prefdiff.evaluate.compare import compare_runs

    summary = compare_runs(run_a, run_b, scorer, out, tie_margin, batch_size, allow_sampler_mismatch, device, dtype)
    if not summary:  # another process of an accelerate launch: the main one reports
        return
    low, high = summary["win_rate_ci"]
    typer.echo(
        f"A wins {summary['win_rate']:.1%} [{low:.1%}, {high:.1%}] of {summary['n']} comparisons; report: "
        f"{out / 'report.html'}"
    )


@app.command("reference")
def reference(
    out: Annotated[Path, typer.Option(help="Directory for the reference errors (shards + reference_info.json).")],
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="The training run's recipe (a packaged name or a YAML file)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs per no-grad reference forward.")] = 32,
    shard_slots: Annotated[int, typer.Option(help="Slots per shard file (the unit of resume).")] = 1024,
    train_processes: Annotated[
        int,
        typer.Option(
            help="Processes the training run will use (sets its pairs per step unless train.global_batch_pairs)."
        ),
    ] = 1,
    overrides: Overrides = None,
) -> None:
    """Compute the reference model's errors once for every slot a training run will visit (the
    same recipe and overrides as the run), for `prefdiff train reference.mode=cached
    reference.path=OUT`. Resumable; splits shards across processes under `accelerate launch`."""
    _quiet_libraries()
    from prefdiff.config import load_config
    from prefdiff.train.reference_cache import compute_reference

    cfg = load_config(config, overrides or [])
    done = compute_reference(cfg, out, batch_size, shard_slots, train_processes)
    typer.echo(
        f"reference errors of {done['slots']} slots in {out} ({done['computed']} computed here in "
        f"{done['seconds']:.1f} s); train with reference.mode=cached reference.path={out}"
    )


@app.command("label-ai")
def label_ai(
    model: Annotated[Path, typer.Option(help="The pipeline that generates the two images per prompt.")],
    prompts: Annotated[Path, typer.Option(help="A prompt file (.txt, .tsv, .json, .jsonl).")],
    scorer: Annotated[
        str, typer.Option(help=f"KIND:PATH ({SCORER_KINDS_HELP}) or a weighted mix 0.7*A+0.3*B: the AI rater.")
    ],
    out: Annotated[Path, typer.Option(help="Directory: images/, pairs.parquet (Pick-a-Pic format), label_ai.json.")],
    lora: Annotated[Path | None, typer.Option(help="A LoRA for the generating model.")] = None,
    tie_threshold: Annotated[
        float, typer.Option(help="Score differences within this become ties (label_0 = 0.5).")
    ] = 0.0,
    temperature: Annotated[
        float | None,
        typer.Option(
            help="Bradley-Terry temperature T: also write soft labels preference_0 = sigmoid((score_0 - score_1) / T) "
            "for data.soft_labels=true (T on the scorer's scale; smaller is harder)."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help=STEPS_HELP)] = None,
    guidance_scale: Annotated[float | None, typer.Option(help=GUIDANCE_HELP)] = None,
    resolution: Annotated[int | None, typer.Option(help="Image size in pixels.")] = None,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call.")] = 4,
    score_batch_size: Annotated[int, typer.Option(help="Images per scorer call.")] = 16,
    device: Annotated[str, typer.Option(help="Where the pipeline and the scorer run: " + DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help="The pipeline's and the scorer's precision: " + DTYPE_HELP)] = "fp32",
) -> None:
    """AI feedback: two images per prompt, labelled by a reward model, as a Pick-a-Pic parquet."""
    _quiet_libraries()
    from prefdiff.evaluate.ai_feedback import label_with_ai
    from prefdiff.evaluate.generate import Placement, SamplerSettings

    placement = Placement(device, dtype)
    placement.resolve()  # an unavailable device or precision: one line, before any work

    counts = label_with_ai(
        model,
        prompts,
        scorer,
        out,
        lora,
        SamplerSettings(steps, guidance_scale, resolution),
        tie_threshold,
        seed,
        batch_size=batch_size,
        temperature=temperature,
        placement=placement,
        score_batch_size=score_batch_size,
    )
    if not counts:  # another process of an accelerate launch: the main one scores and reports
        return
    typer.echo(
        f"{counts['pairs']} pairs ({counts['ties']} ties) in {out / 'pairs.parquet'}; train with "
        f"data.path={out / 'pairs.parquet'}"
    )


@app.command()
def cache(
    model: Annotated[
        Path, typer.Option(help="The diffusers pipeline directory whose VAE and text encoder(s) encode the data.")
    ],
    data: Annotated[str, typer.Option(help="The preference data (the same spec as data.path).")],
    out: Annotated[Path, typer.Option(help="Cache directory; give it to training as data.path.")],
    resolution: Annotated[int, typer.Option(help="Pixels: resize the short side, centre crop a square.")] = 512,
    flip_copies: Annotated[
        bool, typer.Option(help="Also store mirrored copies (needed for data.random_flip).")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Images per VAE / text-encoder batch.")] = 16,
    shard_size: Annotated[int, typer.Option(help="Pairs per shard file (the unit of resume).")] = 256,
    dtype: Annotated[
        str, typer.Option(help="Encoder precision: fp32, fp16 or bf16 (latents are stored in fp16).")
    ] = "fp32",
    overrides: Overrides = None,
) -> None:
    """Encode every pair once (VAE latent mean/std, text conditioning) into a sharded cache.

    Resumable after a kill; splits shards across processes under `accelerate launch`."""
    _quiet_libraries()
    import torch
    from accelerate import Accelerator

    from prefdiff.config import load_config
    from prefdiff.data.cache import CacheSettings, build_cache, finish_cache
    from prefdiff.errors import PrefdiffError
    from prefdiff.models import load_backbone

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise PrefdiffError(f"--dtype {dtype!r}: expected fp32, fp16 or bf16")
    config = load_config(None, [f"data.path={data}", f"data.resolution={resolution}", *(overrides or [])])
    accelerator = Accelerator()
    backbone = load_backbone(model, config.model).to(accelerator.device, dtypes[dtype])
    settings = CacheSettings(
        resolution=resolution,
        flip_copies=flip_copies,
        shard_size=shard_size,
        batch_size=batch_size,
        strict=config.data.strict,
    )
    identity = build_cache(
        backbone, config.data, out, settings, accelerator.process_index, accelerator.num_processes, progress=True
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        info = finish_cache(out, identity, accelerator.num_processes)
        typer.echo(
            f"cache of {info['num_pairs']} pairs in {len(info['shards'])} shard(s) at {out}; dropped: {info['dropped']}"
        )


@app.command("implicit-accuracy")
def implicit_accuracy_command(
    model: Annotated[
        Path, typer.Option(help="The base pipeline directory: the reference the tuned model is judged against.")
    ],
    cache: Annotated[
        Path, typer.Option(help="A latent cache of held-out labelled pairs (`prefdiff cache`) made with this model.")
    ],
    lora: Annotated[Path | None, typer.Option(help="The tuned LoRA directory (a run's lora/).")] = None,
    denoiser: Annotated[
        Path | None, typer.Option(help="Or a fully tuned denoiser directory (a run's unet/ or transformer/).")
    ] = None,
    draws: Annotated[int, typer.Option(help="Noise draws per pair, averaged before the sign is taken.")] = 4,
    beta: Annotated[
        float, typer.Option(help="Scales the reported reward margin only; the accuracy does not depend on it.")
    ] = 5000.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per forward.")] = 32,
    seed: Annotated[
        int, typer.Option(help="Draw k uses noise seed SEED + k: reruns and models meet the same noise.")
    ] = 1234,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help="Autocast precision of the denoisers: " + DTYPE_HELP)] = "fp32",
    out: Annotated[Path | None, typer.Option(help="Also write the result as JSON to this file.")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="model.* and data.* keys of the run, e.g. model.zero_terminal_snr=true train.timesteps=[249]."
        ),
    ] = None,
) -> None:
    """Implicit reward accuracy of a tuned model on held-out labelled pairs: the share of pairs whose
    winner it denoises better, relative to the base, than the loser (the paper's 72% for DPO-SDXL)."""
    _quiet_libraries()
    import json

    from prefdiff.config import load_config
    from prefdiff.data.cache import load_cache_info
    from prefdiff.devices import resolve_device, resolve_dtype
    from prefdiff.errors import PrefdiffError
    from prefdiff.evaluate.implicit import implicit_accuracy
    from prefdiff.models import load_backbone

    if (lora is None) == (denoiser is None):
        raise PrefdiffError("give exactly one of --lora or --denoiser")
    if draws < 1 or batch_size < 1:
        raise PrefdiffError(f"--draws and --batch-size must be >= 1 (got {draws} and {batch_size})")
    resolve_dtype(dtype, resolve_device(device))  # an absent GPU or precision: one line before loading
    resolution = load_cache_info(cache)["transform"]["resolution"]
    config = load_config(None, [f"data.path={cache}", f"data.resolution={resolution}", *(overrides or [])])
    backbone = load_backbone(model, config.model)
    backbone.use_timesteps(config.train.timesteps)
    measured = implicit_accuracy(
        backbone, cache, config.data, lora, denoiser, beta, draws, batch_size, seed, device, dtype
    )
    result: dict[str, object] = {
        **measured,
        "model": str(model),
        "cache": str(cache),
        "lora": str(lora) if lora else None,
        "denoiser": str(denoiser) if denoiser else None,
        "draws": draws,
        "seed": seed,
        "device": str(resolve_device(device)),
        "dtype": dtype,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(
        f"implicit accuracy {measured['implicit_accuracy']:.1%} over {measured['pairs']:.0f} pairs "
        f"({draws} draws; mean reward margin {measured['reward_margin']:.4g} at beta {beta:g})"
    )


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Directory for everything the quickstart makes.")] = Path("runs/quickstart"),
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Dotted overrides: toy.* for the world and raters (toy.oracle=dark_background, toy.train_pairs=512, "
            "toy.oracle=mymodule:score), anything else for both training runs (train.max_steps=200, "
            "objective.beta=1000)."
        ),
    ] = None,
) -> None:
    """The toy world end to end: on-policy pairs, simulated votes, DPO and SFT, held-out win rates, a report."""
    _quiet_libraries()
    from prefdiff.toy.quickstart import run_quickstart

    run_quickstart(out, overrides or [])


toy_app = typer.Typer(help="The toy world: the embedded base model and its simulated raters.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")


@toy_app.command("pretrain")
def toy_pretrain(
    out: Annotated[Path, typer.Option(help="Where to write the pretrained pipeline (diffusers format).")] = Path(
        "runs/toy_base"
    ),
    family: Annotated[
        str,
        typer.Option(
            help="sd: a StableDiffusionPipeline (VAE, UNet and CLIP trained here); sd3: a StableDiffusion3Pipeline "
            "(an MMDiT trained on the flow objective, on the shipped sd base's VAE and CLIP encoder)."
        ),
    ] = "sd",
    seed: Annotated[int, typer.Option(help="Seed of the scenes, the initialisation and the batches.")] = 0,
    vae_steps: Annotated[int | None, typer.Option(help="VAE optimizer steps (sd; default 1200).")] = None,
    unet_steps: Annotated[
        int | None, typer.Option(help="UNet and text-encoder optimizer steps (sd; default 5000).")
    ] = None,
    transformer_steps: Annotated[
        int | None, typer.Option(help="Transformer optimizer steps (sd3; default: FlowPretrainSettings').")
    ] = None,
    pool: Annotated[int, typer.Option(help="Scenes rendered for pretraining.")] = 24000,
) -> None:
    """Pretrain a toy base pipeline from a seed (the package ships the result of the defaults of each family)."""
    _quiet_libraries()
    from prefdiff.errors import ConfigError
    from prefdiff.toy.pretrain import pretrain_family

    steps = {"vae_steps": vae_steps, "unet_steps": unet_steps, "transformer_steps": transformer_steps}
    for name, value in (*steps.items(), ("pool", pool)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
    given = {name: value for name, value in steps.items() if value is not None}
    report = pretrain_family(family, out, {"seed": seed, "pool": pool, **given}, log=typer.echo)
    samples = report["samples"]
    typer.echo(
        f"pretrained base: {out} (colour match {samples['colour_match']:.1%}, shape match {samples['shape_match']:.1%})"
    )


@toy_app.command("shapes")
def toy_shapes(
    out: Annotated[Path, typer.Option(help="The Pick-a-Pic-format parquet file to write.")] = Path(
        "runs/data/shapes.parquet"
    ),
    rows: Annotated[int, typer.Option(help="Number of pairs (about a tenth are ties).")] = 256,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the captions and drawings.")] = 0,
) -> None:
    """Write drawn-shapes preference pairs (the winner matches its caption): the tiny recipes' data."""
    from prefdiff.errors import ConfigError
    from prefdiff.toy.synthetic import write_shapes_parquet

    for name, value in (("--rows", rows), ("--size", size)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1 (got {value})")
    path = write_shapes_parquet(out, num_rows=rows, size=size, seed=seed)
    typer.echo(f"{rows} shape pairs written to {path}; train with data.path={path}")


@toy_app.command("layouts")
def toy_layouts(
    out: Annotated[Path, typer.Option(help="Folder for images/ and layouts.jsonl.")],
    per_caption: Annotated[int, typer.Option(help="Layouts per held-out caption (6 captions).")] = 24,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the places, sizes and fields.")] = 0,
) -> None:
    """Draw colour layouts (a soft blob of the caption's colour on a plain field, at a random place
    and size) for the held-out captions; `prefdiff generate --init-images DIR/layouts.jsonl` edits them."""
    from prefdiff.errors import ConfigError
    from prefdiff.toy.layouts import write_layouts

    for name, value in (("--per-caption", per_caption), ("--size", size)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1 (got {value})")
    path = write_layouts(out, per_caption, seed, size=size)
    typer.echo(
        f"{sum(1 for _ in path.read_text().splitlines())} layouts written to {path}; generate from them with "
        f"`prefdiff generate --model BASE --init-images {path} --strength 0.7 --out DIR`"
    )


def main() -> None:
    """Entry point: user-facing errors print one clear line and exit 2."""
    from prefdiff.errors import run_reporting_user_errors

    run_reporting_user_errors(app)

"""Settings of the toy-world quickstart (``toy.*`` overrides of ``prefdiff quickstart``)."""

from __future__ import annotations

from dataclasses import dataclass

from prefdiff.config import _f


@dataclass
class ToyConfig:
    family: str = _f(
        "sd",
        "The toy base's model family: sd (a UNet on epsilon; Diffusion-DPO) or sd3 (an MMDiT on the flow velocity; "
        "Flow-DPO). It picks the shipped base and the training recipe.",
    )
    base: str = _f(
        "",
        "Base pipeline directory (of toy.family); empty: the pretrained toy model of that family shipped inside the "
        "package.",
    )
    oracle: str = _f(
        "large_central",
        "What the simulated raters like: a built-in taste (large_central, dark_background, vivid_colour, crisp_edges, "
        "small_objects, warm_background, high_placement, clean_background; docs/tastes.md) or module:function "
        "(any (image: PIL.Image, caption: str) -> float, higher is better).",
    )
    rater_agreement: float = _f(
        0.75, "Fraction of base-model pairs on which one rater agrees with the oracle (calibrates the noise)."
    )
    raters: int = _f(5, "Raters per comparison; the majority decides, an even split is a tie.")
    train_pairs: int = _f(1024, "On-policy pairs drawn from the base model for the preference-training captions.")
    heldout_pairs: int = _f(128, "Labelled pairs on the held-out captions, for implicit_accuracy_heldout.")
    validation_pairs: int = _f(
        128,
        "Labelled on-policy pairs on the training captions, kept out of training: the set whose implicit accuracy "
        "train.eval_every measures and train.select_step chooses the kept step on (0: none; then train.eval_every "
        "must be 0). Made only when train.eval_every is set.",
    )
    eval_images_per_caption: int = _f(72, "Paired comparisons per held-out caption (6 captions).")
    sample_steps: int = _f(
        15,
        "Sampler steps for every generated image, with the pipeline's own sampler (DDIM for sd, the flow's "
        "FlowMatchEulerDiscreteScheduler for sd3); toy.sampler_steps is the same key.",
    )
    guidance_scale: float = _f(
        3.0, "Classifier-free guidance scale for every generated image (toy.guidance is the same key)."
    )
    timestep_spacing: str = _f(
        "auto",
        "The sd sampler's timestep spacing: leading, trailing, linspace, or auto: trailing when train.timesteps is "
        "set (SDXL-Turbo's, whose 4 steps are 999, 749, 499, 249: the set a few-step run trains on), else the base's "
        "own (leading).",
    )
    layouts_per_caption: int = _f(
        24,
        "The 'from colour layouts' section: colour layouts per held-out caption that base and DPO models both edit "
        "by SDEdit from the same seeds (0: no such section).",
    )
    layout_strength: float = _f(
        0.85,
        "SDEdit strength of the layout section: how far each layout is noised before the model denoises it "
        "(0 keeps it, 1 ignores it). 0.85 is the lowest of 0.5, 0.7, 0.85 and 1 at which DPO won at least 65% "
        "for all three shipped tastes (docs/sdedit.md).",
    )
    generate_batch: int = _f(64, "Images per generation call.")
    seed: int = _f(0, "Seed of the pairs, the votes and the evaluation images.")
    objectives: list[str] = _f(
        ["dpo", "sft"],
        "The objectives to train and rank, each NAME or NAME@key=value@...: a plain key is objective.<key>, a dotted "
        "key any config key (dpo@label_smoothing=0.1, dpo@beta=auto, dpo@data.soft_labels=true). Must hold dpo and "
        "sft; all share the pairs, votes, cache and base samples.",
    )

"""Report prose generated from what ran (issue #32): a report names only the pipelines, cells and budgets its
parameters and run records say, never a list written by hand that drifts from the profile."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from micronet_lib.experiments import parse_setting

__all__ = ["setting_text", "augment_plan", "PLAN_MARK"]

PLAN_MARK = "This run compares"  # the plan paragraph's first words (tests find the paragraph by them)
_PIPELINES = {"baseline": "crop + flip", "cutout": "crop + flip + Cutout", "autoaugment": "crop + flip + AutoAugment "
              "(CIFAR-10 policy)", "trivialaugment": "crop + flip + TrivialAugment",
              "fastaa": "crop + flip + Fast-AutoAugment (one policy set per epoch)",
              "fastaa4x": "Fast-AutoAugment, the four sets over a 4× epoch (the authors' recipe)"}


def setting_text(setting: str) -> str:
    """``"randaugment"`` → ``"crop + flip + RandAugment N=2, M=9"``; ``"+cutmix"`` adds ``" + CutMix"``."""
    pipeline, mix = parse_setting(setting)
    name, *args = pipeline.split(":")
    if name == "randaugment":
        text = f"crop + flip + RandAugment N={args[0]}, M={args[1]}"
    else:
        text = _PIPELINES.get(name, pipeline)
    return text + {"none": "", "cutmix": " + CutMix", "mixup": " + Mixup"}.get(mix, f" + {mix}")


def augment_plan(settings: Sequence[str], *, missing: Mapping[str, str], params: Mapping[str, Any],
                 grid: Sequence[str]) -> str:
    """The 03 plan as Markdown, from the settings this run trains (``settings``, after ``missing`` was left out),
    the RandAugment ``grid`` and the profile's budget (``params``)."""
    seeds = list(params["seeds"])[: params["comparison_seeds"]]
    budget = (f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} each, {params['epochs'] or 'the profile’s'} epochs, "
              f"{params['train_per_class'] or 'all'} training images per class, profile `{params['profile']}`")
    lines = [f"**{PLAN_MARK}** {len(settings)} augmentation settings, as its `augment_pipelines` parameter lists them "
             f"({budget}):", ""]
    lines += [f"- `{s}`: {setting_text(s)}" for s in settings]
    if missing:
        lines += ["", "Not run here: " + "; ".join(f"`{s}` ({why})" for s, why in missing.items()) + "."]
    if grid:
        lines += ["", f"The RandAugment search trains {len(grid)} settings ("
                  + ", ".join(f"`{g}`" for g in grid) + "), selected on the validation split where the profile has "
                  "one; its best setting is reported apart from the comparison, which tests "
                  + (", ".join(f"`{s}` as {setting_text(s).removeprefix('crop + flip + ')}" for s in settings
                               if s.startswith("randaugment")) or "no RandAugment setting") + "."]
    return "\n".join(lines)

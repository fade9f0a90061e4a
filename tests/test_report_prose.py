"""Report prose from what ran (issue #32): 03 names only the augmentation settings its parameters train.

The rendered report is checked in tests/test_pipeline.py (the full smoke pipeline on a fresh clone)."""

from __future__ import annotations

import re

import pytest

from micronet_lib.pipeline import load_profile
from micronet_lib.report.prose import augment_plan, setting_text


def _named(text: str) -> list[str]:
    """The settings a plan names as trained (its bullet list)."""
    return re.findall(r"^- `([^`]+)`", text, flags=re.M)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_plan_names_exactly_the_profiles_settings(profile):
    params = load_profile(profile)
    settings = list(params["augment_pipelines"])
    text = augment_plan(settings[1:], missing={settings[0]: "asset absent"}, params=params,
                        grid=[f"randaugment:{n}:{m}" for n in params["randaugment_n"] for m in params["randaugment_m"]])
    assert _named(text) == settings[1:]  # a setting left out is not named as trained ...
    assert f"`{settings[0]}` (asset absent)" in text  # ... but as not run, with the reason
    assert f"{len(params['seeds'][: params['comparison_seeds']])} seed" in text


def test_randaugment_text_gives_its_n_and_m():
    assert setting_text("randaugment") == "crop + flip + RandAugment N=2, M=9"
    assert setting_text("baseline+cutmix") == "crop + flip + CutMix"



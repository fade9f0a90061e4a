"""The study's publishing rules (issue #28): a profile names its execution mode, the override is one
documented variable, a machine that cannot run the mode is told so in one line."""

from pathlib import Path

import pytest

from micronet_lib.train import profiles
from micronet_lib.train.profiles import EXECUTION_ENV, parse_execution, profile_execution


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_publishing_profiles_name_their_execution_mode(profile, monkeypatch):
    monkeypatch.delenv(EXECUTION_ENV, raising=False)
    values = profiles.PROFILES[profile]["values"]
    assert "auto" not in (values.get("precision", "fp32"), values.get("memory_format", "contiguous"))


def test_override_and_refusal_name_the_mode(monkeypatch):
    monkeypatch.setenv(EXECUTION_ENV, "fp32+channels_last")
    mode = profile_execution("cpu", "cpu")
    assert (mode["precision"], mode["memory_format"]) == ("fp32", "channels_last")
    assert EXECUTION_ENV in mode["source"]
    monkeypatch.delenv(EXECUTION_ENV)
    monkeypatch.setattr("micronet_lib.accel.execution.bf16_native", lambda device: False)
    with pytest.raises(ValueError, match=r"execution mode bf16\+channels_last .*cannot run here.*MICRONET_EXECUTION=fp32"):
        profile_execution("cpu", "cpu")
    assert profile_execution("smoke", "cpu")["name"] == "fp32+contiguous"
    with pytest.raises(ValueError, match="expected"):
        parse_execution("bf17")
    assert parse_execution("auto") == ("auto", "auto") and parse_execution("fp32") == ("fp32", "contiguous")


@pytest.mark.slow
def test_smoke_study_pairs_two_cells_by_seed_and_image(tmp_path, monkeypatch, one_thread):
    """Two tiny arms × two seeds through the study's own path: every run keeps its per-image outcomes in
    its record, the comparison table and the claim box pair by seed and image and state the MDE, and the
    outcomes are read back from the record once the checkpoints are gone (a committed set's fresh clone)."""
    from micronet_lib import experiments as ex
    from micronet_lib.report.claims import ClaimBoard
    from micronet_lib.pipeline import check_params

    monkeypatch.setenv("MICRONET_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv(EXECUTION_ENV, raising=False)
    params = check_params({"epochs": 1, "train_per_class": 4, "val_per_class": 2, "test_per_class": 3}, profile="smoke")
    cells = [(c, s) for c in (ex.AblationCell("ce", False), ex.AblationCell("ce", True)) for s in (0, 1)]
    summaries = ex.train_all([ex.ablation_config(params, c, seed=s) for c, s in cells], progress=False)
    assert {s["execution"]["train"]["source"] for s in summaries} == {"config"}  # named, not timed
    runs = ex.runs_frame(summaries, [dict(cell=c.label) for c, _ in cells])
    assert ex.default_metric(runs) == ex.ALL_TEST
    ids = {o.test_id for o in runs.attrs["outcomes"].values()}
    assert len(ids) == 1 and len(runs.attrs["outcomes"]) == 4  # one test split shared by both seeds and arms
    table = ex.comparison_table(runs, "cell", "CE")
    assert table["Δ MDE 80 % (points)"].iloc[1] is not None and table["Δ MDE 80 % (points)"].iloc[1] >= 0
    board = ClaimBoard(["ortho_helps"])
    board.settle_paired("ortho_helps", runs, by="cell", treatment="CE + ortho", baseline="CE", summaries=summaries,
                        params=params)
    box = board.box("ortho_helps")
    assert "paired by seed and image" in box and "minimum detectable effect" in box and "design: 2 seeds" in box
    for s in summaries:  # drop the checkpoints: the records still give the same outcomes
        for pt in Path(s["run_dir"]).glob("*.pt"):
            pt.unlink()
    again = ex.runs_frame(summaries, [dict(cell=c.label) for c, _ in cells])
    assert again[ex.ALL_TEST].tolist() == runs[ex.ALL_TEST].tolist()


# Two builds of the same commit publish byte-identical tables: tested on the smoke profile by
# tests/test_pipeline.py::test_full_smoke_pipeline_on_a_fresh_clone_leaves_git_status_clean.

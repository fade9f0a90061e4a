"""The claims a report tests, and the boxes that state them (issue #11; rules in docs/verdicts.md).

``CLAIMS`` is the table of the paper's claims the notebooks test: the claim in one sentence, where it
is stated, and the direction of the effect it predicts. A notebook opens with a ``ClaimBoard``: its
claims with "pending" verdicts, shown at the top of the report and updated in place (an IPython
display id) as each section settles one with ``board.settle(...)``, which also shows the full box
where the result is. ``setup_text`` writes the setup line from the run summaries themselves (images
per split, epochs, seeds, profile, departures), so a box never states a budget the runs did not use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from micronet_lib.report.stats import Interval, Verdict, verdict
from micronet_lib.experiments.aggregate import ALL_TEST, default_metric, paired_design
from micronet_lib.report import results
from micronet_lib.train.runs import read_metrics

__all__ = ["Claim", "CLAIMS", "setup_text", "design_text", "at_paper_setup", "ClaimBoard", "claim_anchor"]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: ``text`` (one sentence), ``source`` (where it is stated), ``section`` (the
    docs/method.md or docs/scoring.md section with the details)."""

    key: str
    text: str
    source: str
    section: str

    def __post_init__(self) -> None:
        for name in ("key", "text", "source", "section"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"Claim.{name} must be a non-empty string")


_CLAIM_ROWS = (
    ("architecture", "MicroNet ver1 / ver2 as described have 451,758 / 472,626 parameters without BN, of which "
     "450,456 / 471,184 are prunable weights.", "authors' README; released checkpoints", "docs/method.md §3.4"),
    ("real_pixels", "On real CIFAR-100 test images the released checkpoints predict what the authors' code predicts.",
     "released checkpoints; authors' code", "docs/method.md §2, §4"),
    ("ortho_values", "The released 1×1 layers carry the orthogonality penalty's imprint: one-step estimate ≈ 0.46–0.47, "
     "exact mean 0.54.", "measured on the released checkpoints", "docs/method.md §6.1"),
    ("similarity_range", "Weighted label smoothing spreads ε by a class similarity S close to uniform: off-diagonal "
     "S in 0.00911–0.01878 (ver1), 0.00916–0.01846 (ver2).", "measured on the released checkpoints",
     "docs/method.md §6.2"),
    ("ortho_helps", "The orthogonality penalty on the 1×1 convolutions improves accuracy.", "paper abstract (step 2)",
     "docs/method.md §6.1"),
    ("wls_beats_ls", "Weighted label smoothing trains better models than uniform label smoothing.",
     "paper abstract (step 2); authors' README recipe", "docs/method.md §6.2–§6.3"),
    ("cutmix_helps", "CutMix, the default input regulariser, improves accuracy over crop + flip alone.",
     "paper abstract (step 3)", "docs/method.md §6.4"),
    ("fastaa_cutmix_helps", "Strong augmentation (Fast-AutoAugment policies + CutMix) improves accuracy over crop + flip.",
     "paper abstract (step 3)", "docs/method.md §7"),
    ("searched_policy_helps", "A policy found by Fast AutoAugment's density-matching search on the training data "
     "improves accuracy over crop + flip, as the released policies do.", "paper abstract (step 3: a search for the "
     "strongest augmentation)", "docs/method.md §7.6"),
    ("chain_nested", "The released ver2 series is one iterative run: nested masks at global sparsities 15/30/45/60 %.",
     "authors' README; released checkpoints", "docs/method.md §4.4, §8.3"),
    ("iterative_vs_oneshot", "Iterative global magnitude pruning without rewinding keeps more accuracy than pruning "
     "once to the final rate with the same fine-tuning budget.", "paper abstract (step 4); authors' README",
     "docs/method.md §8.3–§8.4"),
    ("scores", "The submissions score 0.0054 (ver1, 2nd place) and 0.0056 (ver2, 3rd place).", "paper abstract; "
     "leaderboard", "docs/scoring.md §1, §6"),
    ("accuracy", "The submissions reach 80.07 % (ver1) and 80.04 % top-1 on the CIFAR-100 test set.",
     "authors' README (notebook outputs)", "docs/method.md §1"),
)
CLAIMS: dict[str, Claim] = {k: Claim(k, t, s, sec) for k, t, s, sec in _CLAIM_ROWS}


def _split_sizes(data_id: str) -> str:
    """``"imagefolder:x:train1200/val200/test500#…"`` → ``"1,200 train / 200 val images, 500 test images per
    epoch for the curves"``. The per-epoch test subset only draws the learning curves: a claim's effect is
    measured on every test image (``train.outcomes``), which its result line states."""
    found = dict((k, int(v)) for k, v in re.findall(r"(train|val|test)(\d+)", data_id.split("#")[0]))
    text = " / ".join(f"{found[k]:,} {k}" for k in ("train", "val") if k in found) + " images"
    return text + (f", {found['test']:,} test images per epoch for the curves" if "test" in found else "")


def setup_text(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The setup of a comparison, read from its runs: data, images per split, epochs, seeds, profile and the
    departures from the authors' recipe that every run shares (the cells' own settings are the comparison)."""
    if not summaries:
        raise ValueError("setup_text needs the summaries of the runs the claim was tested on")
    first = summaries[0]
    seeds = sorted({s["config"]["seed"] for s in summaries})
    epochs = sorted({s.get("epochs_total") or s.get("epochs") for s in summaries})
    # A departure every compared run shares (same field, same value); what differs between them is the comparison.
    shared = set.intersection(*(set(s.get("deviations", ())) for s in summaries))
    stated = {"dataset", "train_per_class", "val_per_class", "test_per_class", "epochs_per_cycle", "init_from"}
    departures = sorted({d.split("=", 1)[0] for d in shared} - stated)
    parts = [f"{first.get('data', '?')}", _split_sizes(first.get("data_id", "")),
             f"{'/'.join(str(e) for e in epochs)} epochs per run (authors: 4 × 150 epochs of 200,000 samples)",
             f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})",
             f"profile `{first.get('profile', '?')}`"]
    text = ", ".join(parts)
    if departures:
        text += "; also departs from the recipe in " + ", ".join(f"`{d}`" for d in departures) + " (see 00)"
    return text


def design_text(summaries: Sequence[Mapping[str, Any]], seeds: int) -> str:
    """The design and the regime of a comparison, from its runs: seeds, passes over the training images, and
    for runs without batch mixing the last epoch's train vs validation top-1 (a gap = the plain model
    overfits, the regime where regularisers can help; docs/study-design.md)."""
    first = summaries[0]
    train = dict((k, int(v)) for k, v in re.findall(r"(train)(\d+)", first.get("data_id", "").split("#")[0]))
    epochs = first.get("epochs_total") or first.get("epochs")
    text = f"design: {seeds} seed{'s' if seeds != 1 else ''} per arm, {epochs} passes over {train.get('train', 0):,} training images"
    gaps = []
    for s in summaries:
        if s["config"].get("mix") != "none" or s["config"].get("prune_rates"):
            continue
        try:
            rows = read_metrics(s["run_dir"])
        except (KeyError, OSError, ValueError):  # a record without its curve: the regime line is left out
            rows = []
        if rows and rows[-1].get("val_top1") is not None:
            gaps.append((rows[-1]["train_top1"], rows[-1]["val_top1"]))
    if gaps:
        tr, va = (sum(g[i] for g in gaps) / len(gaps) for i in (0, 1))
        text += f"; runs without mixing end at train top-1 {tr:.1f} % vs val {va:.1f} % (gap {tr - va:+.1f} points)"
    return text


def at_paper_setup(params: Mapping[str, Any]) -> bool:
    """True only for the paper profile on the real CIFAR-100: the one setup where a result on the wrong side
    of 0 *contradicts* the paper instead of being *not reproduced at this budget* (docs/verdicts.md)."""
    return params.get("profile") == "paper" and params.get("data") == "cifar100"


_AGAINST = ("**This goes against the paper.** Likely reason: the budget and data above (a few epochs on a "
            "small subset, not 4 × 150 epochs of 200,000 augmented CIFAR-100 samples); the regularisers the "
            "paper relies on act over long training.")


def claim_anchor(key: str) -> str:
    """The HTML id of a claim's box in its report (the set's landing page links ``html/NN.html#<id>``)."""
    return f"claim-{key}"


@dataclass
class _Entry:
    setup: str = ""
    result: str = ""
    verdict: Verdict | None = None
    effect: Interval | None = None  # the number the verdict was computed from, for the set's landing page


@dataclass
class ClaimBoard:
    """The claims of one report: ``show()`` at the top, ``settle(key, …)`` where each result is computed.

    The top display is updated in place (``display_id``), so the executed report opens with every verdict.
    """

    keys: Sequence[str]
    display_id: str = "claims"
    entries: dict[str, _Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [k for k in self.keys if k not in CLAIMS]
        if unknown:
            raise ValueError(f"unknown claim(s) {unknown}; known: {', '.join(CLAIMS)}")
        self.entries = {k: _Entry() for k in self.keys}

    def markdown(self) -> str:
        rows = ["| claim | source | result (95 % interval) | verdict |", "|---|---|---|---|"]
        for k in self.keys:
            c, e = CLAIMS[k], self.entries[k]
            verdict = f"**{e.verdict.label}**" if e.verdict else "pending (computed below)"
            cells = (c.text, c.source, e.result or "—", verdict)
            rows.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")  # a '|' in a result
        return "### Claims tested in this report\nVerdict rules: [docs/verdicts.md](../docs/verdicts.md).\n\n" + "\n".join(rows)

    def box(self, key: str) -> str:
        c, e = CLAIMS[key], self.entries[key]
        doc = c.section.split(" ")[0]
        lines = [f'<a id="{claim_anchor(key)}"></a>**Claim** ({c.source}; [{c.section}](../{doc})): {c.text}',
                 f"**Setup**: {e.setup}", f"**Result**: {e.result}",
                 f"**Verdict**: {e.verdict.text() if e.verdict else 'pending'}"]
        if e.verdict and e.verdict.label in ("not reproduced at this budget", "contradicted"):
            lines.append(_AGAINST if e.verdict.label != "contradicted" else "**This contradicts the paper.**")
        return "\n".join("> " + line + "  " for line in lines)

    def settle(self, key: str, *, setup: str, result: str, verdict: Verdict, effect: Interval | None = None) -> None:
        """Record a claim's outcome, show its box here and update the board at the top of the report.

        ``effect``: the interval the verdict was computed from (a paired difference, a Wilson interval), kept
        as numbers in the claims table so the set's landing page need not parse ``result``."""
        if key not in self.entries:
            raise ValueError(f"claim {key!r} is not on this board ({', '.join(self.keys)})")
        if not isinstance(verdict, Verdict):
            raise ValueError(f"verdict must be a stats.Verdict, got {type(verdict).__name__}")
        if effect is not None and not isinstance(effect, Interval):
            raise ValueError(f"effect must be a stats.Interval, got {type(effect).__name__}")
        self.entries[key] = _Entry(setup, result, verdict, effect)
        self._display(self.box(key))
        self._display(self.markdown(), update=True)

    def settle_paired(self, key: str, runs, *, by: str, treatment: Any, baseline: Any,
                      summaries: Sequence[Mapping[str, Any]], params: Mapping[str, Any],
                      metric: str | None = None, direction: int = +1) -> None:
        """Settle ``key`` from the paired difference ``treatment − baseline`` of a runs table
        (``experiments.paired_design``: by seed and test image where the runs keep per-image outcomes, else
        by seed), the setup read from ``summaries`` (the runs of both arms). The box states the design, the
        interval, its half-width, the minimum detectable effect (80 % power) and the training regime."""
        metric = metric or default_metric(runs)
        d, pred = paired_design(runs, by, treatment, baseline, metric)
        if metric == ALL_TEST:
            n_images = next(iter(runs.attrs["outcomes"].values())).n
            what = f"top-1 on all {n_images:,} test images, paired by seed and image"
        else:
            what = f"{metric.replace('_', ' ')} paired by seed"
        result = f"{treatment} − {baseline}, {what}: {d.text(2, ' points')}"
        if d.has_interval:
            result += f"; half-width ±{d.half_width:.2f}"
        if pred is not None:
            result += f"; minimum detectable effect (80 % power) {pred.mde:.2f} points"
        setup = setup_text(summaries) + "; " + design_text(summaries, d.n)
        self.settle(key, setup=setup, result=result,
                    verdict=verdict(d, direction=direction, paper_setup=at_paper_setup(params)), effect=d)

    def show(self) -> None:
        self._display(self.markdown(), new=True)

    def _display(self, text: str, *, new: bool = False, update: bool = False) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import Markdown, display, update_display
        except ImportError:  # pragma: no cover - IPython ships with the notebook extras
            return
        if get_ipython() is None:
            return
        if update:
            update_display(Markdown(text), display_id=self.display_id)
        elif new:
            display(Markdown(text), display_id=self.display_id)
        else:
            display(Markdown(text))

    def save(self, name: str, *, meta: Mapping[str, Any]) -> None:
        """Write the board as a table of this results set (``results.save``), e.g. ``02_claims``."""
        results.save(self.frame(), name, meta=meta, title="Claims tested in this report and their verdicts")

    def frame(self):
        """The board as a table (for ``results.save``): one row per claim."""
        import pandas as pd

        rows = []
        for k in self.keys:
            e = self.entries[k]
            iv = e.effect
            rows.append(dict(key=k, claim=CLAIMS[k].text, source=CLAIMS[k].source, setup=e.setup, result=e.result,
                             verdict=e.verdict.label if e.verdict else "pending",
                             reason=e.verdict.reason if e.verdict else "",
                             effect=iv.estimate if iv else None, effect_low=iv.low if iv else None,
                             effect_high=iv.high if iv else None, effect_n=iv.n if iv else None,
                             effect_method=iv.method if iv else None))
        return pd.DataFrame(rows)

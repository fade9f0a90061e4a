"""The pilot of the CPU study design (issue #28, docs/study-design.md): two arms of one claim at two budgets,
a few seeds, every test image scored, so the variance components of a paired comparison can be measured.

    nice -n 10 python scripts/study_pilot.py --data imagefolder:../shared/data/cifar10-jpeg \
        --runs /tmp/study-pilot/runs --out docs/study-pilot.json

Runs go to ``--runs`` (a run store: a killed pilot resumes where it stopped; finished runs are read back).
The arms are crop + flip vs crop + flip + CutMix (claim ``cutmix_helps``), both CE + orthogonality 0.7, the
profile's recipe; budgets are the outer loop, so a pilot stopped early has whole budgets (both arms, every seed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

BUDGETS = {  # name → (train images per class, epochs): same number of optimiser steps, different data/epoch ratio
    "50x16": (50, 16),
    "200x4": (200, 4),
}
ARMS = {"baseline": "none", "baseline+cutmix": "cutmix"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budgets", default=",".join(BUDGETS))
    ap.add_argument("--analyse", action="store_true", help="train nothing: analyse the finished runs of the store")
    args = ap.parse_args(argv)

    import statistics

    import torch

    from micronet_lib.report.outcomes import test_outcomes
    from micronet_lib.train import run_or_load
    from micronet_lib.train.config import TrainConfig
    from micronet_lib.train.runs import finished_summary, read_metrics

    torch.set_num_threads(2)
    budgets = [b for b in args.budgets.split(",") if b]
    found: dict[str, dict[str, dict[int, tuple]]] = {b: {a: {} for a in ARMS} for b in budgets}
    for b in budgets:
        per_class, epochs = BUDGETS[b]
        for seed in range(args.seeds):
            for arm, mix in ARMS.items():
                cfg = TrainConfig.from_profile(
                    "cpu", seed=seed, dataset=args.data, train_per_class=per_class, val_per_class=20,
                    test_per_class=1, bn_recalibrate_images=200, epochs_per_cycle=epochs, cycles=1, augment="baseline",
                    mix=mix, precision="bf16", memory_format="channels_last")
                t0 = time.time()
                s = finished_summary(cfg, args.runs) if args.analyse else run_or_load(cfg, runs_dir=args.runs)
                if s is None:
                    continue
                o = test_outcomes(s)
                print(f"{b} seed {seed} {arm}: val {s['best_val_top1']:.2f} test (all {o.n}) {o.top1:.2f} "
                      f"epoch {s['best_epoch']}/{epochs}, train+eval {s['seconds']:.0f} s, wall {time.time() - t0:.0f} s, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
                found[b][arm][seed] = (s, o)
    report = {"data": args.data, "arms": ARMS, "budgets": {}}
    for b in budgets:
        base, treat = found[b]["baseline"], found[b]["baseline+cutmix"]
        shared = sorted(set(base) & set(treat))
        if not shared:
            continue
        rows = {arm: [read_metrics(s["run_dir"]) for s, _ in found[b][arm].values()] for arm in ARMS}
        entry = dict(
            train_per_class=BUDGETS[b][0], epochs=BUDGETS[b][1], seeds=shared,
            top1={arm: {seed: round(o.top1, 2) for seed, (_, o) in found[b][arm].items()} for arm in ARMS},
            last_train_top1={arm: [round(r[-1]["train_top1"], 2) for r in rows[arm]] for arm in ARMS},
            last_val_top1={arm: [r[-1]["val_top1"] for r in rows[arm]] for arm in ARMS},
            best_epoch={arm: {seed: s["best_epoch"] for seed, (s, _) in found[b][arm].items()} for arm in ARMS},
            run_seconds={arm: {seed: s["seconds"] for seed, (s, _) in found[b][arm].items()} for arm in ARMS},
            train_img_per_s_median=statistics.median(r["images_per_s"] for a in ARMS for rr in rows[a] for r in rr),
            eval_seconds_median=statistics.median(r["eval_seconds"] for a in ARMS for rr in rows[a] for r in rr),
            discordant={seed: round(float((treat[seed][1].correct != base[seed][1].correct).mean()), 4) for seed in shared},
            effect_per_seed={seed: round(treat[seed][1].top1 - base[seed][1].top1, 2) for seed in shared},
        )
        if len(shared) >= 2:
            from micronet_lib.report import power
            from micronet_lib.report.stats import paired_effect

            comp = power.components_from_outcomes({k: v[1] for k, v in treat.items()}, {k: v[1] for k, v in base.items()})
            iv = paired_effect({k: treat[k][1].correct for k in shared}, {k: base[k][1].correct for k in shared})
            upper = power.seed_variance_upper(comp)
            entry.update(
                effect=dict(estimate=iv.estimate, low=iv.low, high=iv.high, half_width=iv.half_width),
                components=dict(var_seed=comp.var_seed, var_image=comp.var_image, var_residual=comp.var_residual,
                                var_seed_upper80=upper, ms_seed=comp.ms_seed, ms_image=comp.ms_image,
                                ms_residual=comp.ms_residual, seeds=comp.seeds, images=comp.images),
                design=power.design_table({b: comp}, seeds=[2, 3, 4, 6, 8, 12, 20], images=[500, 2000, 10000])
                .to_dict(orient="records"),
                seeds_needed={str(t): power.seeds_needed(comp, t, images=comp.images) for t in (1.5, 1.0, 0.5)},
                seeds_needed_pessimistic={str(t): power.seeds_needed(comp, t, images=comp.images, var_seed=upper)
                                          for t in (1.5, 1.0, 0.5)},
            )
        report["budgets"][b] = entry
    from micronet_lib.fileio import atomic_write_json

    atomic_write_json(args.out, report)
    print(json.dumps({b: {k: v for k, v in r.items() if k != "design"} for b, r in report["budgets"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

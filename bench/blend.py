"""Benchmark: contributivity of 500 submissions x 8 folds x 5,000 rows x 3 classes.

Runs datarun's blending and ramp-workflow's (`rampwf.utils.combine.blend_on_fold`, what
`ramp-blend` runs per fold) on the same synthetic probabilities, in one run, and prints
both wall times, their ratio, and the time to add one submission to an existing blend.
ramp-workflow's cost per fold does not depend on the other folds, so by default it runs
on one fold only and its time is multiplied by the number of folds (said in the output);
`--ramp-folds 8` runs it on all of them. Run: `.venv/bin/python bench/blend.py`.
"""

import argparse
import contextlib
import io
import os
import sys
import time

import numpy as np

from datarun.remote.scoring.blending import contributivity


def synthetic(rng, y, n_submissions, n_classes, strength=(0.8, 1.2)):
    """Weak, noisy, slightly correlated classifiers: their greedy ensembles grow long."""
    shared = rng.normal(size=(len(y), n_classes))
    preds = np.empty((n_submissions, len(y), n_classes))
    for i in range(n_submissions):
        logits = rng.uniform(*strength) * np.eye(n_classes)[y] + 0.1 * shared
        logits += rng.normal(scale=1.5, size=logits.shape)
        np.exp(logits, out=preds[i])
        preds[i] /= preds[i].sum(axis=1, keepdims=True)
    return preds


def ramp_members(y, preds, n_classes):
    from rampwf.prediction_types import make_multiclass
    from rampwf.score_types import NegativeLogLikelihood
    from rampwf.utils.combine import blend_on_fold

    Predictions = make_multiclass(label_names=list(range(n_classes)))
    truth = Predictions(y_true=y)
    candidates = [Predictions(y_pred=p) for p in preds]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every step
        chosen = blend_on_fold(candidates, truth, NegativeLogLikelihood())
    return [int(i) for i in chosen]


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=500)
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--ramp-folds", type=int, default=1, help="folds ramp-workflow runs on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n_sub, n_folds = args.submissions, args.folds
    print(
        f"{n_sub} submissions x {n_folds} folds x {args.rows} validation rows x {args.classes} "
        f"classes, score log_loss, {os.cpu_count()} cores",
        file=sys.stderr,
    )
    ys = [rng.integers(0, args.classes, args.rows) for _ in range(n_folds)]
    preds = [synthetic(rng, y, n_sub, args.classes) for y in ys]

    t_one, blend = timed(lambda: contributivity("classification", "log_loss", ys, preds))
    t_two, blend2 = timed(lambda: contributivity("classification", "log_loss", ys, preds, n_jobs=2))
    assert blend2.members == blend.members
    t_datarun = min(t_one, t_two)
    sizes = [len(m) for m in blend.members]
    print(f"datarun, full recomputation: {t_one:.2f} s on 1 thread, {t_two:.2f} s on 2 threads")
    print(f"  ensemble sizes per fold: {sizes}; combined log_loss fold 0: "
          f"{blend.combined_scores[0]:.4f} (best single {blend.best_single_scores[0]:.4f})")

    ramp_folds = max(1, min(args.ramp_folds, n_folds))
    print(f"ramp-workflow on {ramp_folds} of {n_folds} folds ...", file=sys.stderr, flush=True)
    t_ramp_part, ramp = timed(
        lambda: [ramp_members(ys[f], preds[f], args.classes) for f in range(ramp_folds)]
    )
    same = ramp == blend.members[:ramp_folds]
    t_ramp = t_ramp_part * n_folds / ramp_folds
    measured = sizes[:ramp_folds]
    estimate = "" if ramp_folds == n_folds else (
        f" (estimated: measured {t_ramp_part:.1f} s on {ramp_folds} fold(s) with ensembles of "
        f"{measured} members, x {n_folds / ramp_folds:g}; its cost grows with the ensemble, so "
        f"folds with bigger ensembles make this an underestimate)"
    )
    print(f"ramp-workflow blend_on_fold: {t_ramp:.1f} s{estimate}")
    print(f"  same ensembles as datarun on the folds it ran: {same}")
    print(f"datarun is {t_ramp / t_datarun:.0f}x faster (goal: at most 5 s and at least 20x)")

    adds = {
        "a typical new submission": [synthetic(rng, y, 1, args.classes)[0] for y in ys],
        "a new best single submission (every fold restarts from step 0)": [
            synthetic(rng, y, 1, args.classes, strength=(1.5, 1.5))[0] for y in ys
        ],
    }
    everyone = preds
    for what, new in adds.items():
        before = blend.members
        t_add, _ = timed(lambda new=new: blend.add(new))
        joined = [
            next((t for t, (a, b) in enumerate(zip(old, now, strict=False)) if a != b), None)
            for old, now in zip(before, blend.members, strict=True)
        ]
        print(f"add {what}: {t_add * 1000:.0f} ms (goal: at most 500 ms)")
        print(f"  step at which it changed each fold's ensemble: {joined}; "
              f"its contributivity {blend.contributivity[-1]:.3f}")
        everyone = [np.concatenate([p, n[None]]) for p, n in zip(everyone, new, strict=True)]
    check = contributivity("classification", "log_loss", ys, everyone)
    print(f"  blend after both adds = full recomputation: {check.members == blend.members}")


if __name__ == "__main__":
    main()

"""Does FUSE select? K candidates trained standalone (the ground truth) against FUSE's choice among the same K.

Run from the repository root::

    .venv/bin/python -m benchmarks.evidence.fuse_quality --quick --json fuse_quality.json     # < 10 min, 1 thread
    .venv/bin/python -m benchmarks.evidence.fuse_quality --seeds 20 --candidates 8 --layers 3 --channels 8 --steps 300

For each seed (independent candidate pools, :func:`ftdfast.nas.derive_seed`):

1. ``K`` genotypes are sampled from the general search space (:class:`ftdfast.nas.SearchSpace`), each built
   as a :class:`~ftdfast.nas.Network` with its own seeded initial weights;
2. **ground truth**: each candidate, from those initial weights, is trained alone with
   :func:`ftdfast.train.train_model` (Adam, lr 1e-3) for the whole epochs closest to ``--steps`` batches on
   the training part, and scored on the held-out test split;
3. **FUSE** runs on the same K (same initial weights): ``--rounds`` rounds of ``--steps / --rounds`` weight
   steps on the training part, alpha fitted on the validation part (carved from the training split, never the
   test split), default settings otherwise;
4. per seed: the Spearman correlation between FUSE's final mixture weights and the standalone accuracies, and
   whether FUSE's pick (argmax alpha) is a **top-quartile** candidate: its standalone accuracy is at least the
   ``ceil(K / 4)``-th best. Chance is the fraction of candidates that qualify (``ceil(K/4) / K`` without ties,
   more with ties at the boundary), averaged over seeds.

Also reported, as a diagnostic: the same two numbers for the candidate with the lowest own validation loss at
the end of FUSE (``FuseResult.candidate_val_loss_history``), i.e. whether alpha ranks better than the
candidates' own validation losses from the same joint training.

Data: scikit-learn's 8x8 digits (1,346 training images, 80 / 20 into training / validation; 451 test images).
Intervals: a Wilson 95% interval for the top-quartile rate (seeds are independent trials), a t 95% interval for
the mean Spearman correlation. ``--json PATH`` writes ``{"top_quartile_rate", "chance", "spearman_mean",
"seeds", ...}`` with the intervals, the settings and every seed's record. Timing is the process's CPU time.

Target (issue 14): FUSE picks a top-quartile candidate at least twice as often as chance.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Sequence

import torch

from ftdfast.atomic import atomic_write_text
from ftdfast.nas import Budget, FuseConfig, SearchSpace, derive_seed, fuse, split_train_val
from ftdfast.nas.search import SplitData, epochs_for_steps
from ftdfast.train import TrainConfig, train_model

#: two-sided 95% quantiles of Student's t, df = 1..30 (then the normal 1.96)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def mean_interval(v: Sequence[float]):
    """(mean, half-width of the t 95% interval); half-width None for fewer than two values."""
    v = [x for x in v if not math.isnan(x)]
    if not v:
        return math.nan, None
    if len(v) < 2:
        return v[0], None
    return statistics.fmean(v), t975(len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))


def wilson(hits: int, n: int, z: float = 1.96):
    """The Wilson 95% interval of a proportion ``hits / n``."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _ranks(v: Sequence[float]) -> List[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties (NaN when either side is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else math.nan


def top_quartile(truth: Sequence[float]) -> float:
    """The accuracy a top-quartile candidate reaches: the ceil(K/4)-th best."""
    return sorted(truth, reverse=True)[math.ceil(len(truth) / 4) - 1]


def load_digits():
    import ftdfast
    d = ftdfast.load_dataset("digits")
    (xt, yt), (xv, yv) = split_train_val(d.x_train, d.y_train, 0.2, seed=0)
    return (xt, yt), (xv, yv), (d.x_test, d.y_test), d.num_classes


def run_seed(seed: int, args, data) -> Dict[str, Any]:
    (xt, yt), (xv, yv), (xs, ys), num_classes = data
    space = SearchSpace()
    budget = Budget(channels=args.channels, layers=args.layers, batch_size=args.batch_size)
    genotypes = space.sample_many(args.candidates, seed=derive_seed(seed, "pool"))

    def build(k):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init", k))
            return space.network(genotypes[k], channels=budget.channels, layers=budget.layers,
                                 num_classes=num_classes, in_channels=int(xt.shape[1]))

    t0 = time.process_time()
    split = SplitData(xt, yt, xs, ys, num_classes, "digits/standalone")
    config = TrainConfig(epochs=epochs_for_steps(args.steps, args.batch_size, len(yt)), batch_size=args.batch_size)
    truth = [float(train_model(build(k), split, config, seed=derive_seed(seed, "batches", k),
                               progress=False).test_accuracy) for k in range(len(genotypes))]
    t_truth = time.process_time() - t0
    t0 = time.process_time()
    # the stopping rules of the converge-then-threshold schedule this benchmark measured (mixture only)
    stops = dict(threshold=0.9, tol=1e-3) if args.weight_loss == "mixture" else {}
    fuse_config = FuseConfig(rounds=args.rounds, w_steps=max(1, args.steps // args.rounds), batch_size=args.batch_size,
                             weight_loss=args.weight_loss, **stops)
    res = fuse([build(k) for k in range(len(genotypes))], (xt, yt), (xv, yv), fuse_config, num_classes=num_classes,
               seed=derive_seed(seed, "fuse"), progress=False, batched=args.batched)
    t_fuse = time.process_time() - t0
    bar = top_quartile(truth)
    own = res.candidate_val_loss_history[-1]
    by_val = min(range(len(own)), key=lambda k: own[k])
    return {"seed": seed, "genotypes": [g.to_dict() for g in genotypes], "standalone_accuracy": truth,
            "weights": res.weights, "pick": res.best_index, "pick_accuracy": truth[res.best_index],
            "top_quartile": truth[res.best_index] >= bar, "chance": sum(a >= bar for a in truth) / len(truth),
            "best_pick": truth[res.best_index] == max(truth), "spearman": spearman(res.weights, truth),
            "val_loss_pick": by_val, "val_loss_top_quartile": truth[by_val] >= bar,
            "val_loss_spearman": spearman([-v for v in own], truth), "stop_reason": res.stop_reason,
            "rounds_run": res.rounds_run, "alpha_steps": res.alpha_steps_history, "epochs": config.epochs,
            "seconds_standalone": t_truth, "seconds_fuse": t_fuse}


def summarize(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    n = len(records)
    hits = sum(r["top_quartile"] for r in records)
    vhits = sum(r["val_loss_top_quartile"] for r in records)
    chance = statistics.fmean(r["chance"] for r in records)
    rho, rho_h = mean_interval([r["spearman"] for r in records])
    vrho, vrho_h = mean_interval([r["val_loss_spearman"] for r in records])
    return {"top_quartile_rate": hits / n, "top_quartile_interval": list(wilson(hits, n)), "chance": chance,
            "ratio_to_chance": (hits / n) / chance if chance else math.nan,
            "spearman_mean": rho, "spearman_halfwidth": rho_h, "seeds": n,
            "best_pick_rate": sum(r["best_pick"] for r in records) / n,
            "val_loss_top_quartile_rate": vhits / n, "val_loss_top_quartile_interval": list(wilson(vhits, n)),
            "val_loss_spearman_mean": vrho, "val_loss_spearman_halfwidth": vrho_h,
            "pick_accuracy_mean": statistics.fmean(r["pick_accuracy"] for r in records),
            "candidate_accuracy_mean": statistics.fmean(statistics.fmean(r["standalone_accuracy"]) for r in records),
            "seconds_standalone": sum(r["seconds_standalone"] for r in records),
            "seconds_fuse": sum(r["seconds_fuse"] for r in records)}


def _fmt_half(h):
    return "n/a" if h is None else f"{h:.2f}"


def report(s: Dict[str, Any], args) -> str:
    lo, hi = s["top_quartile_interval"]
    vlo, vhi = s["val_loss_top_quartile_interval"]
    verdict = ("meets" if s["top_quartile_rate"] >= 2 * s["chance"] else "misses")
    return "\n".join([
        f"FUSE selection quality: {s['seeds']} seeds, K={args.candidates} candidates, skeleton C={args.channels} "
        f"L={args.layers}, {args.steps} weight steps ({args.rounds} rounds), digits 8x8",
        f"  top-quartile pick rate  {s['top_quartile_rate']:.2f}  (95% {lo:.2f}-{hi:.2f})  chance {s['chance']:.2f}"
        f"  -> {s['ratio_to_chance']:.2f}x chance ({verdict} the 2x target)",
        f"  Spearman(alpha, standalone accuracy)  {s['spearman_mean']:+.2f} ± {_fmt_half(s['spearman_halfwidth'])}"
        " (95%)",
        f"  best-candidate pick rate {s['best_pick_rate']:.2f}; pick's standalone accuracy "
        f"{100 * s['pick_accuracy_mean']:.1f}% vs candidates' mean {100 * s['candidate_accuracy_mean']:.1f}%",
        f"  diagnostic, lowest own validation loss after FUSE: top-quartile {s['val_loss_top_quartile_rate']:.2f} "
        f"(95% {vlo:.2f}-{vhi:.2f}), Spearman {s['val_loss_spearman_mean']:+.2f} ± "
        f"{_fmt_half(s['val_loss_spearman_halfwidth'])}",
        f"  CPU time: standalone {s['seconds_standalone']:.0f} s, FUSE {s['seconds_fuse']:.0f} s"])


def incumbent_study(args, data) -> Dict[str, Any]:
    """How often last run's winner wins the next FUSE, per incumbent policy (Budget.incumbent): two-iteration
    :func:`~ftdfast.nas.fuse_search` runs on the same seeds; chance is 1 / (candidates in the second run)."""
    from ftdfast.nas import fuse_search
    (xt, yt), (xv, yv), (xs, ys), num_classes = data
    task = SplitData(torch.cat([xt, xv]), torch.cat([yt, yv]), xs, ys, num_classes, "digits")
    out: Dict[str, Any] = {}
    for policy in ("keep", "reinit"):
        budget = Budget(iterations=2, candidates=args.candidates, rounds=args.rounds,
                        w_steps=max(1, args.steps // args.rounds), channels=args.channels, layers=args.layers,
                        batch_size=args.batch_size, incumbent=policy, schedule="threshold")
        wins, sizes = [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            h = fuse_search(SearchSpace(), task, budget, seed=derive_seed(seed, "incumbent study"),
                            progress=False).history
            wins.append(h[1]["best"] == 0)
            sizes.append(len(h[1]["genotypes"]))
            print(f"incumbent={policy} seed {seed}: the incumbent {'won' if wins[-1] else 'lost'} "
                  f"(weights {', '.join(f'{w:.2f}' for w in h[1]['weights'])})", flush=True)
        out[policy] = {"incumbent_win_rate": sum(wins) / len(wins), "interval": list(wilson(sum(wins), len(wins))),
                       "chance": statistics.fmean(1 / k for k in sizes), "seeds": len(wins)}
    return out


QUICK = dict(seeds=8, candidates=8, channels=4, layers=1, steps=100, rounds=5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"the CI size: {QUICK}")
    p.add_argument("--seeds", type=int, default=12)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--steps", type=int, default=300, help="weight steps per candidate (standalone and in FUSE)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batched", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weight-loss", default="mixture", choices=["mixture", "own"],
                   help="what FUSE's weight phase minimizes (ftdfast.nas.fuse, weight_loss)")
    p.add_argument("--json", help="write the summary and every seed's record here")
    p.add_argument("--incumbent-study", action="store_true", help="instead: how often the previous winner wins "
                   "the next FUSE with Budget.incumbent 'keep' and 'reinit' (two-iteration searches)")
    if p.parse_known_args(argv)[0].quick:          # --quick sets the defaults; explicit options still win
        p.set_defaults(**QUICK)
    args = p.parse_args(argv)
    args.batched = {"auto": "auto", "true": True, "false": False}[args.batched]
    if args.seeds < 1 or args.candidates < 2 or args.steps < 1 or args.rounds < 1:
        p.error("--seeds >= 1, --candidates >= 2, --steps >= 1 and --rounds >= 1 are required")
    torch.set_num_threads(args.threads)
    data = load_digits()
    if args.incumbent_study:
        study = incumbent_study(args, data)
        for policy, v in study.items():
            lo, hi = v["interval"]
            print(f"incumbent={policy}: wins {v['incumbent_win_rate']:.2f} of second runs (95% {lo:.2f}-{hi:.2f}), "
                  f"chance {v['chance']:.2f}, {v['seeds']} seeds")
        if args.json:
            atomic_write_text(args.json, json.dumps({"incumbent_study": study, "settings": vars(args)}, indent=1)
                              + "\n")
        return 0
    records = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r = run_seed(seed, args, data)
        records.append(r)
        print(f"seed {seed}: pick {r['pick']} ({100 * r['pick_accuracy']:.1f}%, top quartile: {r['top_quartile']}), "
              f"standalone {', '.join(f'{100 * a:.0f}' for a in r['standalone_accuracy'])}; weights "
              f"{', '.join(f'{w:.2f}' for w in r['weights'])}; rho {r['spearman']:+.2f}; {r['stop_reason']} after "
              f"{r['rounds_run']} rounds", flush=True)
    s = summarize(records)
    print(report(s, args))
    if args.json:
        settings = {k: getattr(args, k) for k in ("seeds", "first_seed", "candidates", "channels", "layers", "steps",
                                                   "rounds", "batch_size", "batched", "threads", "quick",
                                                   "weight_loss")}
        out = {**s, "settings": settings, "torch": torch.__version__, "records": records}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

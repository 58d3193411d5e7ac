"""Which estimator ranks source models by their measured transfer gain? (issue 25, the comparison)

Run from the repository root after :mod:`benchmarks.evidence.transfer.groundtruth` (its source networks are reused from
its cache; nothing is retrained that it trained)::

    .venv/bin/python -m benchmarks.evidence.transfer.compare score       # resumable, one JSON per (setting, target, seed)
    .venv/bin/python -m benchmarks.evidence.transfer.compare asym        # d(a, b) and d(b, a) for the asymmetry pairs
    .venv/bin/python -m benchmarks.evidence.transfer.compare summarize   # -> benchmarks/evidence/transfer/compare.json, a table

**Two settings** of :func:`ftdfast.transfer.rank_sources`:

- ``models``: what a practitioner has: one trained network per source. For each source seed s, the sources
  are the 9 networks of seed s (``nn.Module`` s); the target's networks are re-initialized copies trained on
  the target's small training set (seeds 0, 1, 2). Each s is one ranking; a target's agreement is the mean
  over s.
- ``tasks``: the paper's design: sources given as tasks (``TaskData``), so that source network s and target
  network s start from the same initialization (the distance step's pairing of seeds); one ranking per
  target, scores averaged over the 3 seeds. The source networks come from the ground truth's cache.

**Ground truth**: a source's gain on a target is its fine-tuned test accuracy minus training from scratch,
paired by seed and averaged over the 3 seeds (:mod:`benchmarks.evidence.transfer.groundtruth`), at the full budget
(``acc_300``) and after 50 steps (the speed of transfer).

**Statistics** (:mod:`benchmarks.evidence.transfer.stats`): per target Kendall tau-b, Spearman, top-1 hit and regret;
their means over the 6 targets with percentile-bootstrap 95% intervals over targets; each estimator against the
paper's FTD paired by target. Costs: wall seconds of each estimator's scoring as ``rank_sources`` reports it
(the target networks' training is charged to the first estimator that needs them: see ``target_nets_s``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ftdfast.atomic import atomic_write_text
from ftdfast.cache import Cache
from ftdfast.transfer import estimators, rank_sources

from . import groundtruth as gt
from .stats import agreement, bootstrap_mean, paired_bootstrap

HERE = os.path.dirname(os.path.abspath(__file__))

#: The estimators compared: label -> (name, options). The first Fisher-based one pays for the target networks.
PEERS = {"leep": ("leep", {}), "nce": ("nce", {}), "logme": ("logme", {}), "hscore": ("hscore", {})}
#: Labels name the options that differ from the paper's definition (head=source, params=all, fisher=empirical,
#: on=test), whatever the library's defaults are: the library's ftd default is ``ftd[fisher=exact]``.
PAPER = {"fisher": "empirical"}
FTD_VARIANTS = {
    "ftd": ("ftd", PAPER),                                         # the paper's: N_a as it is, all parameters
    "ftd[fisher=exact]": ("ftd", {"fisher": "exact"}),             # the library's default
    "ftd[params=body]": ("ftd", {**PAPER, "params": "body"}),
    "ftd[head=probe]": ("ftd", {**PAPER, "head": "probe"}),
    "ftd[head=probe,params=body]": ("ftd", {**PAPER, "head": "probe", "params": "body"}),
    "ftd[on=train]": ("ftd", {**PAPER, "on": "train"}),
    "fisher_cosine": ("fisher_cosine", PAPER),
}
TASK_ONLY = {"task2vec": ("task2vec", {}), "otdd": ("otdd", {})}
SETTINGS = ("tasks", "models")


def _methods(setting: str, only: Optional[Sequence[str]]) -> Dict[str, Any]:
    table = {**PEERS, **FTD_VARIANTS, **(TASK_ONLY if setting == "tasks" else {})}
    return {k: estimators.get(n, **o) for k, (n, o) in table.items() if not only or k in only}


def _raws():
    return {d: gt.raw_dataset(d) for d in ("mnist", "fashion", "cifar10")}


def score(args) -> None:
    torch.set_num_threads(args.threads)
    raws = _raws()
    cache = Cache(os.path.join(args.gt, "cache"))
    targets = [t for t in gt.TARGETS if not args.targets or t.name in args.targets]
    for setting in args.settings:
        for spec in targets:
            target = gt.target_data(spec, args.shots, args.target_test, raws[spec.dataset])
            seeds = (None,) if setting == "tasks" else args.source_seeds
            for s in seeds:
                tag = "all" if s is None else f"seed{s}"
                path = os.path.join(args.out, setting, spec.name, f"{tag}.json")
                done = json.load(open(path)) if os.path.exists(path) else {"rankings": {}}
                methods = {k: e for k, e in _methods(setting, args.methods).items() if k not in done["rankings"]}
                if not methods:
                    continue
                if setting == "tasks":
                    sources = {src.name: src.task.build(gt.source_data(src.dataset, args.source_train,
                                                                        raws[src.dataset]), seed=0)
                               for src in gt.SOURCES}
                    kw = {"seeds": list(gt.SEEDS), "cache_dir": os.path.join(args.gt, "cache")}
                else:
                    sources = {src.name: gt.source_network(src, s, cache, args.source_train, raws[src.dataset])[0]
                               for src in gt.SOURCES}
                    kw = {"seeds": list(gt.SEEDS)}
                t0 = time.perf_counter()
                out = rank_sources(sources, target, methods=list(methods.values()), progress=False, **kw)
                for key, est in methods.items():
                    done["rankings"][key] = out[est.label].to_dict()
                done.update(setting=setting, target=spec.name, source_seed=s,
                            seconds_total=done.get("seconds_total", 0.0) + time.perf_counter() - t0)
                atomic_write_text(path, json.dumps(done, indent=1))
                print(f"{setting} {spec.name} {tag}: {len(out)} estimators, {time.perf_counter() - t0:.0f} s",
                      flush=True)


ASYM_METHODS = {"ftd": ("ftd", PAPER), "ftd[fisher=exact]": ("ftd", {"fisher": "exact"}), "leep": ("leep", {})}


def asym_score(args) -> None:
    """d(a, b) for both orders of every pair of :data:`groundtruth.ASYM_PAIRS` (sources as tasks: paired seeds)."""
    torch.set_num_threads(args.threads)
    raws = _raws()
    by_name = {s.name: s for s in gt.SOURCES}
    ordered = [p for a, b in gt.ASYM_PAIRS for p in ((a, b), (b, a))]
    for b in sorted({b for _, b in ordered}):
        path = os.path.join(args.out, "asym", f"{b}.json")
        if os.path.exists(path):
            continue
        spec = by_name[b]
        target = gt.target_data(spec, args.shots, args.target_test, raws[spec.dataset])
        sources = {a: by_name[a].task.build(gt.source_data(by_name[a].dataset, args.source_train,
                                                           raws[by_name[a].dataset]), seed=0)
                   for a, bb in ordered if bb == b}
        t0 = time.perf_counter()
        methods = {k: estimators.get(n, **o) for k, (n, o) in ASYM_METHODS.items()}
        out = rank_sources(sources, target, methods=list(methods.values()), seeds=list(gt.SEEDS),
                           cache_dir=os.path.join(args.gt, "cache"), progress=False)
        atomic_write_text(path, json.dumps({"target": b, "rankings": {k: out[e.label].to_dict()
                                                                      for k, e in methods.items()},
                                            "seconds_total": time.perf_counter() - t0}, indent=1))
        print(f"asym {b}: {time.perf_counter() - t0:.0f} s", flush=True)


def asym_summary(args) -> Dict[str, Any]:
    """Per unordered pair: the gain difference (a -> b minus b -> a) and each estimator's prediction of its sign."""
    gain = load_gain(args.asym_csv, "300")
    scores = {}
    for f in sorted(os.listdir(os.path.join(args.out, "asym"))):
        rec = json.load(open(os.path.join(args.out, "asym", f)))
        scores[rec["target"]] = rec["rankings"]
    pairs, agree = [], defaultdict(list)
    for a, b in gt.ASYM_PAIRS:
        if b not in scores or a not in scores:
            continue
        row = {"a": a, "b": b, "gain_ab": gain[b][a], "gain_ba": gain[a][b]}
        for label, r in scores[b].items():
            sign = -1.0 if r["lower_is_better"] else 1.0
            ab, ba = r["scores"][a], scores[a][label]["scores"][b]
            row[label] = {"ab": ab, "ba": ba}
            # the estimator predicts a -> b is the better direction when its (signed) score is higher there
            agree[label].append(float((sign * (ab - ba) > 0) == (row["gain_ab"] > row["gain_ba"])))
        pairs.append(row)
    return {"pairs": pairs, "agreement": {k: {"hits": int(sum(v)), "of": len(v)} for k, v in agree.items()}}


def load_gain(path: str, step: str) -> Dict[str, Dict[str, float]]:
    """target -> source -> mean over seeds of (finetuned - scratch) accuracy at ``acc_<step>``, in points."""
    rows = list(csv.DictReader(open(path)))
    scratch = {(r["target"], r["seed"]): float(r[f"acc_{step}"]) for r in rows if r["source"] == "scratch"}
    per = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["source"] != "scratch":
            per[r["target"]][r["source"]].append(100 * (float(r[f"acc_{step}"]) - scratch[(r["target"], r["seed"])]))
    return {t: {s: float(np.mean(v)) for s, v in d.items()} for t, d in per.items()}


def summarize(args) -> Dict[str, Any]:
    gains = {step: load_gain(args.csv, step) for step in ("300", "50")}
    result: Dict[str, Any] = {"gain": gains, "settings": {}}
    for setting in SETTINGS:
        folder = os.path.join(args.out, setting)
        if not os.path.isdir(folder):
            continue
        per_method: Dict[str, Dict[str, List[Dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
        cost: Dict[str, List[float]] = defaultdict(list)
        for target in sorted(os.listdir(folder)):
            complete = all(target in g and len(g[target]) == len(gt.SOURCES) for g in gains.values())
            if not complete:
                print(f"{setting} {target}: the ground truth lacks some (source, seed) runs; left out", file=sys.stderr)
                continue
            for f in sorted(os.listdir(os.path.join(folder, target))):
                rec = json.load(open(os.path.join(folder, target, f)))
                for label, r in rec["rankings"].items():
                    for step in gains:
                        per_method[label][step].append(
                            {"target": target, **agreement(r["scores"], gains[step][target], r["lower_is_better"])})
                    cost[label].append(r["seconds"])
        rows = {}
        for label, by_step in per_method.items():
            row = {"cost_s": float(np.mean(cost[label]))}
            for step, recs in by_step.items():
                by_target = defaultdict(list)  # the models setting has 3 rankings per target: average them
                for rec in recs:
                    by_target[rec["target"]].append(rec)
                targets = sorted(by_target)
                agg = {t: {k: float(np.mean([x[k] for x in by_target[t]])) for k in ("kendall", "spearman", "top1",
                                                                                    "regret")} for t in targets}
                row[step] = {k: dict(zip(("mean", "lo", "hi"), bootstrap_mean([agg[t][k] for t in targets])))
                             for k in ("kendall", "spearman", "top1", "regret")}
                row[step]["per_target"] = agg
            rows[label] = row
        base = rows.get("ftd")
        for label, row in rows.items():
            if base is None or label == "ftd":
                continue
            ts = sorted(row["300"]["per_target"])
            a = [row["300"]["per_target"][t]["kendall"] for t in ts]
            b = [base["300"]["per_target"][t]["kendall"] for t in ts]
            row["kendall_minus_ftd"] = dict(zip(("mean", "lo", "hi"), paired_bootstrap(a, b)))
        result["settings"][setting] = rows
    if os.path.exists(args.asym_csv) and os.path.isdir(os.path.join(args.out, "asym")):
        result["asymmetry"] = asym_summary(args)
    atomic_write_text(args.json, json.dumps(result, indent=1))
    print(report(result))
    return result


def report(result: Dict[str, Any]) -> str:
    lines = []
    for setting, rows in result["settings"].items():
        lines += [f"\n### setting: {setting}\n",
                  "| estimator | Kendall tau (95% CI) | Spearman | top-1 hits | regret (points) | tau at 50 steps "
                  "| tau minus FTD's (95% CI) | seconds per ranking |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        order = sorted(rows, key=lambda k: -rows[k]["300"]["kendall"]["mean"])
        for label in order:
            r, k = rows[label], rows[label]["300"]["kendall"]
            d = r.get("kendall_minus_ftd")
            n = len(r["300"]["per_target"])
            lines.append(
                f"| {label} | {k['mean']:+.2f} ({k['lo']:+.2f} to {k['hi']:+.2f}) | {r['300']['spearman']['mean']:+.2f} "
                f"| {r['300']['top1']['mean'] * n:.1f} of {n} | {r['300']['regret']['mean']:.1f} "
                f"| {r['50']['kendall']['mean']:+.2f} | "
                + (f"{d['mean']:+.2f} ({d['lo']:+.2f} to {d['hi']:+.2f})" if d else "-")
                + f" | {r['cost_s']:.1f} |")
    if "asymmetry" in result:
        asym = result["asymmetry"]
        lines += ["\n### asymmetry: is the better direction of each pair the one the estimator prefers?\n",
                  "| a | b | gain a -> b | gain b -> a | " + " | ".join(f"{k}: a->b / b->a" for k in asym["agreement"])
                  + " |", "|---|---|---:|---:|" + "---:|" * len(asym["agreement"])]
        for r in asym["pairs"]:
            lines.append(f"| {r['a']} | {r['b']} | {r['gain_ab']:+.1f} | {r['gain_ba']:+.1f} | "
                         + " | ".join(f"{r[k]['ab']:.3f} / {r[k]['ba']:.3f}" for k in asym["agreement"]) + " |")
        lines.append("\nright direction: " + ", ".join(f"{k} {v['hits']} of {v['of']}" for k, v in asym["agreement"].items()))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("score", "asym", "summarize"))
    p.add_argument("--gt", default=os.path.join(HERE, "groundtruth"), help="the ground truth's run folder")
    p.add_argument("--csv", default=os.path.join(HERE, "groundtruth.csv"))
    p.add_argument("--asym-csv", default=os.path.join(HERE, "groundtruth_asym.csv"))
    p.add_argument("--out", default=os.path.join(HERE, "compare"), help="score files (resumable)")
    p.add_argument("--json", default=os.path.join(HERE, "compare.json"))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--targets", nargs="*")
    p.add_argument("--methods", nargs="*", help="only these estimator labels")
    p.add_argument("--source-train", type=int, default=gt.SOURCE_TRAIN)
    p.add_argument("--shots", type=int, default=gt.SHOTS)
    p.add_argument("--target-test", type=int, default=gt.TARGET_TEST)
    p.add_argument("--source-seeds", type=int, nargs="+", default=list(gt.SEEDS),
                   help="models setting: the source seeds to rank (one ranking each)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    {"score": score, "asym": asym_score, "summarize": summarize}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``ftdfast`` command line.

    ftdfast demo                         # the paper's four tasks on scikit-learn digits: distance matrices
    ftdfast distance --dataset mnist --data-dir DIR --arch small_cnn,resnet18 --seeds 5 --epochs 5 --out results/
    ftdfast fisher --model pkg.mod:make --data data.npz [--weights w.pt] [--out fisher.pt] [--saliency] ...
    ftdfast merge --fisher a.pt b.pt --weights wa.pt wb.pt --out merged.pt
    ftdfast transfer rank --source-tasks mnist:0,1,3 --target fashion-mnist:2 --target-train 200 --method ftd,leep
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import List, Optional

import torch

from .native import _ext
from ._version import __version__
from .distance.matrix import FISHER_DATA, HEADS
from .distance.measures import DEFAULT_MEASURE, MEASURES
from .distance.task import DEFAULT_FISHER
from .data.formats import open_npz, read_npz_split
from .fisher import FisherDiagonal, fisher_diagonal
from .fisher.losses import FISHER_KINDS, LOSSES
from .nas.fuse import WEIGHT_LOSSES
from .models.user import load_user_model
from .nas.search import BUDGET_PRESETS, INCUMBENT_POLICIES, SCHEDULES


BACKENDS = ["auto", "rules", "native", "func", "loop", "loop1", "legacy"]


def _count(text: str) -> int:
    """argparse type: an int >= 1, checked when the command line is parsed (before any work)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _positive(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    """argparse type: a number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


def _print_result(f: FisherDiagonal, seconds: float) -> None:
    print(f.format_table())
    print(f"N = {f.num_samples}, {f.meta['fisher']} Fisher, loss {f.meta['loss']}, backend {f.meta['backend']}, "
          f"{seconds:.2f} s")


def cmd_fisher(args) -> int:
    model = load_user_model(args.model, args.weights)
    data = read_npz_split(args.data, args.split)
    t0 = time.perf_counter()
    f = fisher_diagonal(model, data, loss=args.loss, fisher=args.fisher, backend=args.backend,
                        batch_size=args.batch_size, max_samples=args.max_samples, device=args.device,
                        progress=not args.no_progress, mc_samples=args.mc_samples,
                        generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - t0
    if args.out:
        f.save(args.out)
    _print_result(f, seconds)
    if args.saliency:
        from .uses import fisher_saliency, format_saliency_table
        print("\nsaliency F * theta^2 / 2 per parameter:")
        print(format_saliency_table(fisher_saliency(model, f)))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_distance(args) -> int:
    from .experiment import run_distance_experiment
    if args.dataset.lower().endswith(".npz"):
        open_npz(args.dataset, "--dataset").close()  # a damaged or foreign file: said now, before any work
    archs = [a for a in args.arch.split(",") if a]
    run_distance_experiment(args.dataset, data_dir=args.data_dir, tasks=args.tasks, archs=archs, seeds=args.seeds,
                            epochs=args.epochs, epsilon=args.epsilon, validation=args.validation, out=args.out,
                            max_train=args.max_train, max_test=args.max_test, device=args.device,
                            method=args.method, head=args.head, fisher=args.fisher, fisher_data=args.fisher_data,
                            strict=args.strict, backend=args.backend, batch_size=args.batch_size,
                            max_fisher_samples=args.fisher_samples, progress=not args.no_progress)
    return 0


def _budget(args):
    """``Budget.preset(args.budget)`` with the options given on the command line in place of its fields."""
    from .nas.search import Budget
    fields = dict(iterations=args.iterations, candidates=args.candidates, rounds=args.rounds, w_steps=args.w_steps,
                  alpha_steps=args.alpha_steps, channels=args.channels, layers=args.layers,
                  seconds=args.budget_seconds, incumbent=args.incumbent, weight_loss=args.weight_loss,
                  schedule=args.schedule)
    return Budget.preset(args.budget, **{k: v for k, v in fields.items() if v is not None})


def _indices(text: str, option: str = "--tasks"):
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        out = []
    if not out:
        raise ValueError(f"{option} must be comma-separated integers like 0,1,3; got {text!r}") from None
    return out


def cmd_dictionary(args) -> int:
    from .experiment import _paper_task_data, build_task_dictionary
    from .nas.dictionary import dictionary_report, report_markdown
    budget = _budget(args)
    d = build_task_dictionary(args.dataset, data_dir=args.data_dir, tasks=_indices(args.tasks), out=args.out,
                              budget=budget, arch=args.arch, seeds=args.seeds, epochs=args.epochs,
                              max_train=args.max_train, max_test=args.max_test, device=args.device,
                              progress=not args.no_progress, epsilon=args.epsilon)
    print(f"wrote {args.out}")
    if not args.no_report:
        _, baselines = _paper_task_data(args.dataset, args.data_dir, _indices(args.tasks), max_train=args.max_train,
                                        max_test=args.max_test)
        epochs = args.report_epochs or args.epochs
        rows = dictionary_report(d, baselines, epochs=epochs, budget=budget, device=args.device,
                                 progress=not args.no_progress)
        print(f"\nDictionary quality: each baseline's cell against the candidates its search weighed, each trained "
              f"alone for {epochs} epochs (test accuracy)\n" + report_markdown(rows))
    return 0


def cmd_search(args) -> int:
    from .experiment import run_task_aware_search
    hand = [a for a in args.hand_designed.split(",") if a]
    final_seeds = _indices(args.final_seeds, "--final-seeds")
    run_task_aware_search(args.dictionary, args.target, data_dir=args.data_dir, budget=_budget(args),
                          epochs=args.epochs, out=args.out, hand_designed=hand, hand_width=args.hand_width,
                          device=args.device, progress=not args.no_progress, seed=args.seed,
                          final_seeds=final_seeds)
    return 0


def cmd_demo(args) -> int:
    """The main job on the built-in dataset: the paper's four MNIST-style tasks on scikit-learn's digits."""
    from .experiment import run_distance_experiment
    result = run_distance_experiment("digits", archs=[args.arch], seeds=args.seeds, epochs=args.epochs,
                                     out=args.out, backend=args.backend, progress=not args.no_progress)
    m = result.matrices[args.arch]
    print(f"wrote {len(result.files)} files to {args.out}/ in {result.seconds:.0f} s "
          f"(training {m.meta['seconds']['train']:.1f} s, Fisher {m.meta['seconds']['fisher']:.1f} s)")
    if args.no_search:
        return 0
    from .experiment import build_task_dictionary, run_task_aware_search
    from .nas.search import Budget
    print("\nTask-aware NAS: a dictionary of digits:0, digits:1, digits:3, then a search for digits:2")
    budget = Budget(iterations=2, candidates=3, rounds=2, w_steps=8, channels=8, layers=3)
    path = os.path.join(args.out, "nas", "dictionary.json")
    build_task_dictionary("digits", tasks=(0, 1, 3), out=path, budget=budget, arch=args.arch, seeds=1,
                          epochs=args.epochs, cache_dir=os.path.join(args.out, "cache"),
                          progress=not args.no_progress)
    run_task_aware_search(path, "digits:2", budget=budget, epochs=args.epochs, out=os.path.join(args.out, "nas"),
                          hand_designed=("vgg16", "resnet18", "densenet121"), hand_width=0.25,
                          progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftdfast", description="Fisher task distances, task-aware NAS and the exact diagonal Fisher of PyTorch models.")
    p.add_argument("--version", action="version",
                   version=f"ftdfast {__version__} (native extension: {'yes' if _ext.HAS_NATIVE else 'no'})")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_demo_parser, _add_distance_parser, _add_dictionary_parser, _add_search_parser,
                _add_fisher_parser, _add_check_parser, _add_merge_parser, _add_transfer_parser, _add_doctor_parser):
        add(sub)
    return p


def _search_parents() -> list:
    """The options every search command shares: the budget (a preset and its fields) and the training set-up."""
    budget = argparse.ArgumentParser(add_help=False)
    g = budget.add_argument_group(
        "search budget (equal for every method)",
        "The CLI starts from the preset --budget (default 'cpu-smoke': a pool of 8 cells of 16 steps, for a smoke run; "
        "'gpu': a pool of 64 cells of 1,000 steps, 16 channels, 5 cells per stage); each option below replaces one "
        "field of it (ftdfast.nas.Budget).")
    g.add_argument("--budget", default="cpu-smoke", choices=BUDGET_PRESETS, help="the budget preset")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help="how FUSE spends the budget (ftdfast.nas.Budget.plan); default 'halving' (successive halving, "
                   "the best-measured on the project's cell table, docs/nas/README.md); 'paper': the authors' schedule")
    g.add_argument("--iterations", type=_count, help="iterations x candidates = the pool of cells random search weighs")
    g.add_argument("--candidates", type=_count, help="new candidates per FUSE run ('threshold' schedule)")
    g.add_argument("--rounds", type=_count, help="rounds x w-steps = the steps random search gives each cell")
    g.add_argument("--w-steps", type=_count)
    g.add_argument("--alpha-steps", type=_count,
                   help="most full-batch alpha steps per FUSE round (alpha stops earlier once it converges)")
    g.add_argument("--incumbent", choices=INCUMBENT_POLICIES,
                   help="how the previous winner enters the next FUSE run (default: the schedule's own)")
    g.add_argument("--weight-loss", choices=WEIGHT_LOSSES,
                   help="'threshold' schedule only: what FUSE's weight phase minimizes, the mixture's loss (default) "
                   "or each candidate's own loss")
    g.add_argument("--channels", type=_count, help="skeleton width of searched networks")
    g.add_argument("--layers", type=_count, help="cells in the skeleton")
    g.add_argument("--budget-seconds", type=_positive, help="wall-time cap of one search")
    tn = argparse.ArgumentParser(add_help=False)
    tn.add_argument("--data-dir")
    tn.add_argument("--epochs", type=_count, default=2, help="training epochs (epsilon-networks, final training)")
    tn.add_argument("--device")
    tn.add_argument("--no-progress", action="store_true", help="no progress bars")
    return [budget, tn]


def _add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="the paper's four tasks on scikit-learn's digits: task-distance tables, heatmaps "
                       "and atlas, then a small task-aware search for task 2 (a few minutes on 2 cores)")
    d.add_argument("--backend", default="auto", choices=BACKENDS)
    d.add_argument("--out", default="ftdfast-demo", help="output folder (default: ftdfast-demo); reruns resume")
    d.add_argument("--arch", default="small_cnn")
    d.add_argument("--seeds", type=_count, default=3)
    d.add_argument("--epochs", type=_count, default=8)
    d.add_argument("--no-search", action="store_true", help="stop after the distances (no task-aware NAS)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)


def _add_dictionary_parser(sub) -> None:
    dic = sub.add_parser("dictionary", help="TA-NAS baseline dictionaries")
    dsub = dic.add_subparsers(dest="action", required=True)
    db = dsub.add_parser("build", parents=_search_parents(), help="FUSE search in the general space for each baseline "
                         "task (resumable)")
    db.add_argument("--dataset", default="digits")
    db.add_argument("--tasks", default="0,1,3", help="the baselines: paper task indices (default 0,1,3)")
    db.add_argument("--arch", default="small_cnn", help="epsilon-network architecture for the Fisher distance")
    db.add_argument("--seeds", type=_count, default=3, help="seeds of the distance to a target (>= 3 for a std)")
    db.add_argument("--max-train", type=_count, help="use N training images (a seeded random sample)")
    db.add_argument("--max-test", type=_count, help="use N test images (a seeded random sample)")
    db.add_argument("--out", default="dictionary.json")
    db.add_argument("--no-report", action="store_true", help="skip the quality report (each baseline's cell and "
                    "its search's candidates trained alone for --report-epochs)")
    db.add_argument("--epsilon", type=_fraction, help="train the task distance's networks as the distance defaults "
                    "do: until test accuracy >= 1 - EPSILON or a plateau, at most --epochs (default: exactly --epochs)")
    db.add_argument("--report-epochs", type=_count, help="training epochs of each network in the quality report "
                    "(default: --epochs)")
    db.set_defaults(func=cmd_dictionary)


def _add_search_parser(sub) -> None:
    se = sub.add_parser("search", parents=_search_parents(), help="task-aware search for a target task, compared with "
                        "FUSE and random search in the general space and hand-designed networks")
    se.add_argument("--dictionary", required=True, help="a file written by `ftdfast dictionary build`")
    se.add_argument("--target", required=True, help="DATASET:TASK_INDEX, e.g. mnist:2")
    se.add_argument("--hand-designed", default="vgg16,resnet18,densenet121",
                    help="comma-separated architectures to compare with ('' for none)")
    se.add_argument("--hand-width", type=_positive, default=1.0, help="channel width factor of the hand-designed nets")
    se.add_argument("--out", default="search")
    se.add_argument("--seed", type=int, default=0, help="user seed; every method's search derives its own from it")
    se.add_argument("--final-seeds", default="0", help="comma-separated seeds of the final training of each "
                    "found cell and hand-designed network (e.g. 0,1,2)")
    se.set_defaults(func=cmd_search)


def _add_distance_parser(sub) -> None:
    t = sub.add_parser("distance", help="the task-distance matrices of a dataset's tasks (resumable)")
    t.add_argument("--dataset", default="digits",
                   help="digits (built in), mnist, fashion-mnist, cifar10, cifar100, or a path (.npz, IDX folder, "
                   "image folder)")
    t.add_argument("--data-dir", help="where the dataset's files are (e.g. the folder holding mnist.npz)")
    t.add_argument("--tasks", default="paper", help="paper (the paper's four tasks), images (pixel-to-pixel "
                   "regression tasks) or indices of the paper's tasks, e.g. 0,1,3")
    t.add_argument("--arch", default="small_cnn", help="comma-separated architectures: small_cnn, lenet, vgg16, "
                   "resnet18, densenet121 (autoencoder for --tasks images)")
    t.add_argument("--seeds", type=_count, default=3, help="seeds (networks per task); >= 3 for a std and ties")
    t.add_argument("--epochs", type=_count, help="most epochs per network (default 20): each trains until its test "
                   "accuracy reaches 1 - epsilon, or stops on a plateau")
    t.add_argument("--epsilon", type=_positive, help="epsilon-approximation target: test accuracy >= 1 - epsilon "
                   "(default 0.02)")
    t.add_argument("--strict", action="store_true", help="fail when a network misses 1 - epsilon (default: warn)")
    t.add_argument("--fisher", default=DEFAULT_FISHER, choices=FISHER_KINDS,
                   help="exact: label-free (default, ftdfast.distance.task.DEFAULT_FISHER; chosen by the ablation in "
                   "docs/paper/REPORT.md); empirical: "
                   "the target's labels fed to every network; mc: labels sampled from the network")
    t.add_argument("--fisher-data", default="test", choices=FISHER_DATA,
                   help="the split the Fishers are computed on (default test, as in the paper; validation needs "
                   "--validation)")
    t.add_argument("--validation", type=_positive, help="hold out this fraction of each training split: epsilon is "
                   "judged on it, and --fisher-data validation computes the Fishers on it")
    t.add_argument("--out", default="results", help="output folder; its cache/ makes reruns resume")
    t.add_argument("--max-train", type=_count, help="use N training images of the dataset (a seeded random sample)")
    t.add_argument("--max-test", type=_count, help="use N test images of the dataset (a seeded random sample)")
    t.add_argument("--fisher-samples", type=_count, help="at most N test samples per Fisher")
    t.add_argument("--method", default=DEFAULT_MEASURE, choices=tuple(MEASURES))
    t.add_argument("--head", default="shared", choices=HEADS,
                   help="shared: every network has the task set's largest class count (default); legacy: the "
                   "authors' zero-padding")
    t.add_argument("--backend", default="auto", choices=BACKENDS)
    t.add_argument("--batch-size", type=_count, default=128, help="Fisher batch size")
    t.add_argument("--device")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_distance)


def _add_fisher_parser(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", default="auto", choices=BACKENDS)
    common.add_argument("--out", help="write the FisherDiagonal here (atomic)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    f = sub.add_parser("fisher", parents=[common], help="the diagonal Fisher of a model on an .npz data file")
    f.add_argument("--model", required=True, help="module:factory returning an nn.Module (module on PYTHONPATH)")
    f.add_argument("--weights", help="a state_dict file to load into the model")
    f.add_argument("--data", required=True, help=".npz with x_test/y_test (see --split) or x/y arrays")
    f.add_argument("--split", default="test", help="which x_<split>/y_<split> arrays to use (default: test)")
    f.add_argument("--loss", default="cross_entropy", choices=tuple(LOSSES))
    f.add_argument("--fisher", default="empirical", choices=FISHER_KINDS)
    f.add_argument("--mc-samples", type=_count, default=1)
    f.add_argument("--batch-size", type=_count, default=128)
    f.add_argument("--max-samples", type=_count)
    f.add_argument("--device")
    f.add_argument("--saliency", action="store_true", help="also print each parameter's Fisher saliency "
                   "F * theta^2 / 2 (the pruning score of ftdfast.uses)")
    f.set_defaults(func=cmd_fisher)


def _add_doctor_parser(sub) -> None:
    d = sub.add_parser("doctor", help="the build, devices, native-op self-checks and FTDFAST_* settings, to paste "
                       "into bug reports")
    d.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    from .doctor import report
    print(report(), end="")
    return 0


def _add_check_parser(sub) -> None:
    c = sub.add_parser("check", help="is the fast Fisher exact on this model? per-module table against a float64 "
                       "per-sample reference; exit code 1 when not exact")
    c.add_argument("--model", required=True, help="module:factory returning an nn.Module (module on PYTHONPATH)")
    c.add_argument("--weights", help="a state_dict file to load into the model")
    c.add_argument("--data", required=True, help=".npz with x_test/y_test (see --split) or x/y arrays")
    c.add_argument("--split", default="test", help="which x_<split>/y_<split> arrays to use (default: test)")
    c.add_argument("--loss", default="cross_entropy", choices=tuple(LOSSES))
    c.add_argument("--samples", type=_count, default=8, help="samples to check on (default 8)")
    c.add_argument("--backend", default="auto", choices=[b for b in BACKENDS if b != "legacy"])
    c.add_argument("--tolerance", type=float, default=1e-9,
                   help="max error per parameter relative to the largest Fisher entry (default 1e-9)")
    c.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    from .check import check
    model = load_user_model(args.model, args.weights)
    result = check(model, read_npz_split(args.data, args.split), loss=args.loss, samples=args.samples,
                   backend=args.backend, tolerance=args.tolerance, show=True)
    return 0 if result.exact else 1


def _add_merge_parser(sub) -> None:
    m = sub.add_parser("merge", help="Fisher-weighted averaging of K models of one architecture (ftdfast.uses)")
    m.add_argument("--fisher", nargs="+", required=True, metavar="FISHER.pt",
                   help="one FisherDiagonal file (ftdfast fisher --out) per model, in the order of --weights")
    m.add_argument("--weights", nargs="+", required=True, metavar="WEIGHTS",
                   help="the models' weights: state files (.safetensors, or .pt/.pth/.bin from torch.save) or "
                   "Hugging Face save_pretrained folders (model.safetensors, pytorch_model.bin, or sharded with "
                   "their index.json)")
    m.add_argument("--coef", nargs="+", type=float, metavar="W",
                   help="merging coefficient per model, >= 0 (normalized; default: equal)")
    m.add_argument("--eps", type=float, help="Fisher floor relative to the mean (normalized) Fisher entry (default: "
                   "ftdfast.uses.merge.DEFAULT_EPS, see docs/uses.md)")
    m.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="scale each Fisher to unit mean entry before merging (default: "
                   "ftdfast.uses.merge.DEFAULT_NORMALIZE, see docs/uses.md)")
    m.add_argument("--out", required=True,
                   help="FILE.safetensors (safetensors), FILE.pt/.pth/.bin (torch.save), or a folder (an existing "
                   "one, a name ending with '/', or a name without extension when a --weights source is a folder): "
                   "model.safetensors with the first source folder's config.json and other non-weight files, "
                   "loadable by from_pretrained. Written atomically")
    m.set_defaults(func=cmd_merge)


def cmd_merge(args) -> int:
    from .uses.checkpoints import check_same_architecture, read_weights, write_weights
    from .uses.merge import DEFAULT_EPS, DEFAULT_NORMALIZE, fisher_merge
    if len(args.fisher) != len(args.weights):
        raise ValueError(f"--fisher has {len(args.fisher)} files but --weights {len(args.weights)}: "
                         "one Fisher per model")
    check_same_architecture(args.weights)
    states = [read_weights(path, "--weights") for path in args.weights]
    for path in args.fisher:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file (--fisher)")
    fishers = [FisherDiagonal.load(path) for path in args.fisher]
    merged = fisher_merge(states, fishers, weights=args.coef, eps=DEFAULT_EPS if args.eps is None else args.eps,
                          normalize=DEFAULT_NORMALIZE if args.normalize is None else args.normalize)
    wrote = write_weights(merged, args.out, args.weights)
    print(f"merged {len(states)} models: {len(fishers[0])} of {len(merged)} tensors Fisher-weighted, the others "
          f"averaged (integer buffers from the first model); wrote {wrote}")
    return 0


def _add_transfer_parser(sub) -> None:
    tr = sub.add_parser("transfer", help="which trained model to start from for a new task: rank sources with "
                        "transferability estimators (ftdfast.transfer)")
    tsub = tr.add_subparsers(dest="action", required=True)
    r = tsub.add_parser("rank", help="rank source models or tasks for a target task; prints a table, writes JSON "
                        "and a bar chart")
    r.add_argument("--source-model", nargs="+", default=[], metavar="[NAME=]FILE",
                   help="trained-model files ({'build': ..., 'state_dict': ...}, e.g. entries of an ftdfast cache's "
                   "model/ folder); NAME defaults to the cache entry's task and seed, else the file name")
    r.add_argument("--source-tasks", nargs="+", default=[], metavar="DATASET:I,J",
                   help="paper tasks of a dataset as sources, e.g. mnist:0,1,3 (networks of --arch are trained, "
                   "one per seed, cached in --cache)")
    r.add_argument("--target", required=True, help="DATASET:TASK_INDEX (e.g. fashion-mnist:2) or an .npz with "
                   "x_train, y_train, x_test, y_test")
    r.add_argument("--target-train", type=_count, help="keep N training samples of the target (its first N: "
                   "built tasks are in a seeded random order), the small-data regime where transfer matters")
    r.add_argument("--method", default=_transfer_default(), help="comma-separated estimators, each NAME or "
                   "NAME[option=value;...] with ';' between options, e.g. leep,logme,ftd[head=probe;fisher=empirical] "
                   "(default: ftdfast.transfer.DEFAULT_METHOD, leep, the best on docs/transfer's ground truth); known: "
                   + ", ".join(_transfer_names()))
    r.add_argument("--seeds", type=_count, default=3, help="seeds of the target's networks (default 3)")
    r.add_argument("--arch", default="small_cnn", help="architecture of the networks trained for --source-tasks")
    r.add_argument("--epochs", type=_count, help="most epochs per trained network (default 20, the distance step's "
                   "epsilon-networks)")
    r.add_argument("--head-module", help="the dotted name of every source network's head (default: its last "
                   "nn.Linear)")
    r.add_argument("--data-dir", help="where the datasets' files are")
    r.add_argument("--max-train", type=_count, help="use N training images of each dataset (a seeded sample)")
    r.add_argument("--max-test", type=_count, help="use N test images of each dataset (a seeded sample)")
    r.add_argument("--cache", help="folder for trained networks (reruns resume); default: none kept")
    r.add_argument("--json", help="write the rankings here (JSON, atomic)")
    r.add_argument("--plot", help="write a bar chart here (PNG), one panel per method")
    r.add_argument("--device")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_transfer_rank)


def _transfer_default() -> str:
    from .transfer.rank import DEFAULT_METHOD
    return DEFAULT_METHOD


def _transfer_names():
    from .transfer.estimators import names
    return names()


def _split_methods(text: str) -> List[str]:
    """``"ftd,ftd[head=probe;fisher=exact],leep"`` -> labels with ',' between options (Estimator.label's form)."""
    out = [m.strip().replace(";", ",") for m in re.split(r",(?![^\[]*\])", text) if m.strip()]
    if not out:
        raise ValueError(f"--method names no estimator: {text!r}; known: {', '.join(_transfer_names())}")
    return out


def _transfer_sources(args) -> dict:
    from .experiment import _paper_task_data
    from .transfer.report import load_model_file
    sources: dict = {}

    def add(name, item, where):
        if name in sources:
            raise ValueError(f"two sources are named {name!r} ({where}); name model files NAME=FILE")
        sources[name] = item

    for spec in args.source_model:
        name, eq, path = spec.partition("=") if "=" in spec else ("", "", spec)
        model, meta = load_model_file(path)
        if not name:
            name = (f"{meta['task']}/seed{meta['seed']}" if "task" in meta and "seed" in meta
                    else os.path.splitext(os.path.basename(path))[0])
        add(name, model, path)
    for spec in args.source_tasks:
        dataset, _, idx = spec.rpartition(":")
        if not dataset:
            raise ValueError(f"--source-tasks must look like DATASET:I,J (e.g. mnist:0,1,3), got {spec!r}")
        _, tasks = _paper_task_data(dataset, args.data_dir, _indices(idx, "--source-tasks"),
                                    max_train=args.max_train, max_test=args.max_test)
        for t in tasks:
            add(t.task.name, t, spec)
    if not sources:
        raise ValueError("no sources: give --source-model FILE ... and/or --source-tasks DATASET:I,J")
    return sources


def _transfer_target(args):
    from .experiment import _paper_task_data, parse_target
    if args.target.lower().endswith(".npz"):
        x_tr, y_tr = read_npz_split(args.target, "train", "--target")
        x_te, y_te = read_npz_split(args.target, "test", "--target")
        with open_npz(args.target, "--target") as z:
            if "x_train" not in z or "x_test" not in z:
                raise ValueError(f"{args.target}: a target .npz needs x_train, y_train, x_test, y_test; found "
                                 f"{sorted(z.files)}")
        n = args.target_train or len(x_tr)
        return (x_tr[:n], y_tr[:n], x_te, y_te)
    dataset, idx = parse_target(args.target)
    _, (task,) = _paper_task_data(dataset, args.data_dir, [idx], max_train=args.max_train, max_test=args.max_test)
    if args.target_train:
        from .tasks import TaskData
        n = args.target_train
        task = TaskData(task.task, task.x_train[:n], task.y_train[:n], task.x_test, task.y_test,
                        num_classes=task.num_classes, loss=task.loss, source=task.source)
    return task


def cmd_transfer_rank(args) -> int:
    from .atomic import atomic_write_text
    from .distance.matrix import DEFAULT_CONFIG
    from .train import TrainConfig
    from .transfer import rank_sources
    from .transfer.report import format_table, parse_method, plot_rankings
    methods = [parse_method(m) for m in _split_methods(args.method)]
    sources, target = _transfer_sources(args), _transfer_target(args)
    config = DEFAULT_CONFIG if args.epochs is None else TrainConfig(**{**DEFAULT_CONFIG.to_dict(),
                                                                        "epochs": args.epochs})
    rankings = rank_sources(sources, target, methods=methods, seeds=args.seeds, head_module=args.head_module,
                            arch=args.arch, config=config, cache_dir=args.cache, device=args.device,
                            progress=not args.no_progress)
    print(format_table(rankings), end="")
    if args.json:
        atomic_write_text(args.json, json.dumps({"target": args.target, "sources": list(sources),
                                                 "seeds": args.seeds,
                                                 "rankings": {k: r.to_dict() for k, r in rankings.items()}},
                                                indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_rankings(rankings, args.plot)}")
    return 0


def _maybe_init_distributed() -> None:
    """Under torchrun (WORLD_SIZE > 1): the process group, NCCL with GPUs else gloo, with a timeout so that a
    rank that dies ends the job instead of hanging it (FTDFAST_DIST_TIMEOUT_S, default 1800 s)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        from .distributed import init_from_env
        init_from_env(timeout_s=float(os.environ.get("FTDFAST_DIST_TIMEOUT_S", "1800")), required=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _maybe_init_distributed()
    try:
        return args.func(args)
    except OSError as e:  # unwritable --out, full disk, missing files
        where = f"{e.filename}: " if e.filename and str(e.filename) not in str(e.strerror or e) else ""
        print(f"ftdfast {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FloatingPointError, RuntimeError) as e:
        print(f"ftdfast {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

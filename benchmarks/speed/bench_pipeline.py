"""The task-distance pipeline end to end, timed by phase: load, train, Fisher, distance.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.speed.bench_pipeline --data-dir ../shared/datasets

Target (issue 13, section 5), on 2 CPU cores: the MNIST 4 x 4 matrix (the paper's four tasks), 3 seeds,
networks trained to epsilon = 0.02, in <= 10 minutes, with the default (label-free exact) Fisher at
<= 20% of the total. Every item is computed (a fresh cache in a temporary folder). Before the timed run,
one Fisher of the pipeline's settings is checked against the per-sample reference (``backend="loop"``,
float64) on a few test samples. Writes a JSON record with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

import ftdfast
from ftdfast.distance import distance_matrix
from ftdfast.experiment import load_tasks
from ftdfast.models import build_model
from ftdfast.train import TrainConfig

TARGET_TOTAL_S = 600.0
TARGET_FISHER_SHARE = 0.20


def check_against_reference(task, fisher: str, batch_size: int, samples: int = 24) -> float:
    """Max relative error of the pipeline's Fisher against the per-sample loop (float64) on ``samples`` images."""
    torch.manual_seed(0)
    net = build_model("small_cnn", in_channels=task.x_test.shape[1], num_classes=task.num_classes,
                      input_size=task.x_test.shape[-1]).eval()
    data = (task.x_test[:samples], task.y_test[:samples])
    got = ftdfast.fisher_diagonal(net, data, fisher=fisher, batch_size=batch_size, progress=False)
    ref = ftdfast.fisher_diagonal(net.double(), (data[0].double(), data[1]), fisher=fisher, backend="loop",
                                  progress=False)
    return max(float((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-300)) for k in ref)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.bench_pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join("..", "shared", "datasets"))
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epsilon", type=float, default=0.02)
    p.add_argument("--epochs", type=int, default=20, help="most epochs per network")
    p.add_argument("--batch-size", type=int, default=256, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (scaled with the batch size)")
    p.add_argument("--fisher", default="exact", choices=["exact", "empirical", "mc"])
    p.add_argument("--fisher-batch-size", type=int, default=256)
    p.add_argument("--fisher-samples", type=int, help="at most N test samples per Fisher (default: all)")
    p.add_argument("--max-train", type=int, help="a seeded sample of N training images (default: all)")
    p.add_argument("--max-test", type=int, help="a seeded sample of N test images (default: all)")
    p.add_argument("--json", help="write the record here")
    args = p.parse_args(argv)

    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    data, tasks = load_tasks(args.dataset, args.data_dir, "paper", max_train=args.max_train, max_test=args.max_test)
    load_s = time.perf_counter() - t0
    err = check_against_reference(tasks[2], args.fisher, args.fisher_batch_size)
    if err > 1e-4:
        print(f"FAIL: the pipeline's {args.fisher} Fisher differs from the per-sample reference by {err:.2e}")
        return 1
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, epsilon=args.epsilon,
                         until_epsilon=True)
    with tempfile.TemporaryDirectory() as cache:
        t1 = time.perf_counter()
        m = distance_matrix(tasks, args.arch, args.seeds, config=config, cache_dir=cache, fisher=args.fisher,
                            progress=False, batch_size=args.fisher_batch_size, max_samples=args.fisher_samples)
        matrix_s = time.perf_counter() - t1
    secs = dict(m.meta["seconds"], load=load_s)
    total = load_s + matrix_s
    share = secs["fisher"] / total
    record = {"dataset": data.name, "train_images": len(data.y_train), "test_images": len(data.y_test),
              "arch": args.arch, "seeds": args.seeds, "epsilon": args.epsilon, "fisher": args.fisher,
              "config": config.to_dict(), "fisher_samples": args.fisher_samples, "threads": threads,
              "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
              "reference_max_rel_error": err, "seconds": secs, "total_seconds": total, "fisher_share": share,
              "epsilon_misses": m.meta["epsilon_misses"],
              "networks": [(r["task"], r["seed"], r["test_accuracy"], r["epochs"]) for r in m.meta["networks"]],
              "targets": {"total_s": TARGET_TOTAL_S, "fisher_share": TARGET_FISHER_SHARE},
              "meets_total": total <= TARGET_TOTAL_S, "meets_fisher_share": share <= TARGET_FISHER_SHARE}
    print(f"{data.name} ({len(data.y_train)} train / {len(data.y_test)} test images), {args.arch}, {args.seeds} "
          f"seeds, epsilon {args.epsilon}, {args.fisher} Fisher, {threads} thread(s) on {os.cpu_count()} cores")
    print(f"reference check: max relative error {err:.1e}")
    for k in ("load", "train", "fisher", "distance"):
        print(f"  {k:9s} {secs[k]:8.1f} s  {secs[k] / total:6.1%}")
    print(f"  {'total':9s} {total:8.1f} s  (target <= {TARGET_TOTAL_S:.0f} s: "
          f"{'met' if record['meets_total'] else 'MISSED'}; Fisher share target <= {TARGET_FISHER_SHARE:.0%}: "
          f"{'met' if record['meets_fisher_share'] else 'MISSED'})")
    if m.meta["epsilon_misses"]:
        print(f"  {len(m.meta['epsilon_misses'])} network(s) missed epsilon:\n    " +
              "\n    ".join(m.meta["epsilon_misses"]))
    print(m.to_markdown())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed and memory of fisher_diagonal on the model zoo (benchmarks/speed/zoo_models.py), as ratios to one
forward+backward of the mean loss measured in the same run.

    OMP_NUM_THREADS=1 python -m benchmarks.speed.zoo [--models id,id] [--repeat 3] [--out benchmarks/speed/zoo.json]

Per model: the batch at a realistic small size (N=32), float32 model; first a check of the
fast path against the independent float64 per-sample reference (benchmarks/speed/zoo_reference.py) on the
first 4 samples, then interleaved timing (median of ``--repeat`` rounds after a warm-up) of

- ``f+b``: forward + backward of the mean cross-entropy (the baseline, ratio 1);
- ``native64`` / ``native32``: ``fisher_diagonal`` (backend "auto": native kernels where built)
  accumulating in float64 / float32;
- ``func``: ``backend="func"`` (whole-model torch.func per-sample gradients), where the model has
  under 2M parameters (it holds N x P numbers); ``backpack`` when BackPACK is installed.

Peak memory: the process's resident-set high-water mark during one call above what it held
before (``/proc/self/clear_refs``), in the same process, with glibc's mmap threshold at 64 KiB
(the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` set) so that freed buffers leave
the resident set; still a lower bound where small blocks are reused. Which modules use the fallback comes from the rules
backend's unit table.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import sys
import warnings
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

import ftdfast
from ftdfast.atomic import atomic_write_text
from ftdfast.fisher.backends import ParamTable, RulesBackend

from . import tools as T
from .compare import MMAP_THRESHOLD, _proc_status, _reset_peak, time_items

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks.speed import zoo_models as Z  # noqa: E402
from benchmarks.speed.zoo_reference import fisher_reference, max_relative_errors  # noqa: E402

N = 32
CHECK = 4
FUNC_MAX_PARAMS = 2_000_000


def _vit():
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=4, num_heads=3, num_classes=Z.CLASSES)


def _hf_causal(config_name, model_name, **cfg):
    return Z._hf(config_name, model_name, "causal", width=Z.VOCAB, vocab_size=Z.VOCAB, **cfg)


# id -> (builder, data maker): the zoo's architectures at benchmark sizes
BENCH: Dict[str, tuple] = {
    "tv-resnet18": (Z.BY_ID["tv-resnet18"].build, Z.images(N, 32)),
    "tv-mobilenet-v3-small": (Z.BY_ID["tv-mobilenet-v3-small"].build, Z.images(N, 32)),
    "tv-efficientnet-b0": (Z.BY_ID["tv-efficientnet-b0"].build, Z.images(N, 32)),
    "tv-regnet-y-400mf": (Z.BY_ID["tv-regnet-y-400mf"].build, Z.images(N, 32)),
    "tv-squeezenet1-1": (Z.BY_ID["tv-squeezenet1-1"].build, Z.images(N, 33)),
    "timm-convnext-tiny-config": (Z.BY_ID["timm-convnext-tiny-config"].build, Z.images(N, 32)),
    "timm-vit-d192-depth4": (_vit, Z.images(N, 32)),
    "timm-mixer": (Z.BY_ID["timm-mixer"].build, Z.images(N, 16)),
    "hf-gpt2-d128": (_hf_causal("GPT2Config", "GPT2LMHeadModel", n_positions=64, n_embd=128, n_layer=2, n_head=4,
                                bos_token_id=1, eos_token_id=1), Z.tokens(N, 32, pad_last=4)),
    "hf-llama-d128": (_hf_causal("LlamaConfig", "LlamaForCausalLM", hidden_size=128, intermediate_size=256,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=64), Z.tokens(N, 32, pad_last=4)),
    "torch-lstm-2layer-bidir": (lambda: Z.Recurrent("lstm", features=16, hidden=64), Z.sequences(N, 20, 16)),
    "torch-gru-2layer-bidir": (lambda: Z.Recurrent("gru", features=16, hidden=64), Z.sequences(N, 20, 16)),
    "torch-transformer-encoder": (lambda: Z.Encoder(d=64, heads=4, layers=2), Z.sequences(N, 20, 64)),
    "torch-embeddingbag-v10k": (lambda: Z.Bags(vocab=10_000, d=64), Z.tokens(N, 40, pad_last=10, vocab=10_000)),
    "timm-mobilevit-xxs": (Z.BY_ID["timm-mobilevit-xxs"].build, Z.images(N, 64)),
}


def _build(model_id: str, dtype=torch.float32):
    build, data = BENCH[model_id]
    torch.manual_seed(0)
    model = Z.randomize_norm_stats(build()).to(dtype).eval()
    x, y = data(torch.Generator().manual_seed(1))
    return model, (x.to(dtype) if x.is_floating_point() else x), y


def _check(model_id: str) -> float:
    """max |F - F_ref| / max F_ref on the first CHECK samples, float64, fresh copies for each side."""
    model, x, y = _build(model_id, torch.float64)
    want = fisher_reference(model, x[:CHECK], y[:CHECK])
    model, x, y = _build(model_id, torch.float64)
    got = ftdfast.fisher_diagonal(model, (x[:CHECK], y[:CHECK]), progress=False)
    return max(max_relative_errors(got, want).values())


def _fallbacks(model) -> List[str]:
    units = RulesBackend(model, ParamTable(model)).units
    return sorted({type(u.module).__qualname__ for u in units if u.rule is None})


def _work(model, x, y) -> Dict[str, Callable[[], object]]:
    def fb():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def fisher(dtype, backend="auto"):
        return lambda: ftdfast.fisher_diagonal(model, (x, y), batch_size=len(y), dtype=dtype, backend=backend,
                                               progress=False)
    items = {"f+b": fb, "native64": fisher(torch.float64), "native32": fisher(torch.float32)}
    if sum(p.numel() for p in model.parameters()) < FUNC_MAX_PARAMS:
        items["func"] = fisher(torch.float64, "func")
    if T.available("backpack"):
        tool = T.prepare("backpack", model)
        items["backpack"] = lambda: tool(x, y)
    return items


def _peak_mb(fn) -> float:
    gc.collect()
    if not (_reset_peak() and "VmRSS" in _proc_status()):
        return float("nan")
    base = _proc_status()["VmRSS"]
    fn()
    return max(0, _proc_status()["VmHWM"] - base) / 1024


def run(model_ids: List[str], repeat: int, log=print) -> List[dict]:
    rows = []
    for mid in model_ids:
        log(f"{mid}: checking against the float64 reference")
        try:
            error = _check(mid)
        except Exception as e:
            error = f"{type(e).__name__}: {str(e)[:80]}"
        model, x, y = _build(mid)
        items, failed = {}, {}
        for name, fn in _work(model, x, y).items():
            try:
                fn()  # a tool that cannot run this model is reported, not timed
                items[name] = fn
            except Exception as e:
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
        times = time_items(items, repeat, lambda s: None)
        peaks = {k: _peak_mb(fn) for k, fn in items.items()}
        base = times["f+b"]["median_ms"]
        row = {"model": mid, "n": len(y), "params": sum(p.numel() for p in model.parameters()),
               "error": error, "fallback": _fallbacks(model), "failed": failed, "fb_ms": base, "fb_peak_mb": peaks["f+b"],
               "ratios": {k: v["median_ms"] / base for k, v in times.items() if k != "f+b"},
               "peak_mb": peaks,
               "peak_ratios": {k: (peaks[k] / peaks["f+b"] if peaks["f+b"] >= 1 else float("nan"))
                               for k in peaks if k != "f+b"},
               "runs_ms": {k: v["runs_ms"] for k, v in times.items()}}
        rows.append(row)
        log(format_row(row))
    return rows


def format_row(r: dict) -> str:
    err = f"{r['error']:.0e}" if isinstance(r["error"], float) else r["error"]
    ratios = " ".join(f"{k}={v:.2f}x" for k, v in r["ratios"].items())
    peaks = " ".join(f"{k}={v:.0f}" for k, v in r["peak_mb"].items())
    failed = "".join(f"  {k} FAILED ({v})" for k, v in r["failed"].items())
    return (f"{r['model']:<28} P={r['params']:>9,} err={err:<8} f+b={r['fb_ms']:.1f} ms  {ratios}  "
            f"peak MB: {peaks}  fallback: {', '.join(r['fallback']) or '-'}{failed}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(BENCH), help="comma-separated ids (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", help="write the rows as JSON here (atomic)")
    args = ap.parse_args(argv)
    if argv is None and os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.speed.zoo"] + sys.argv[1:], env)
    warnings.filterwarnings("ignore")
    ids = [m for m in args.models.split(",") if m]
    unknown = [m for m in ids if m not in BENCH]
    if unknown:
        raise SystemExit(f"unknown model ids {unknown}; known: {sorted(BENCH)}")
    rows = run(ids, args.repeat)
    if args.out:
        payload = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z",
                   "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
        atomic_write_text(args.out, json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

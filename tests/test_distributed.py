"""Data-parallel Fisher and the work-split helpers, on 2 CPU processes over gloo.

ONE job is spawned (start-up costs seconds): it runs every agreement scenario, then
fails on purpose on rank 1 in ways that every rank catches and records, saves each
rank's records, and at last lets an uncaught error on rank 1 end the job as a launcher
would. Its process group is started by ``init_from_env`` from torchrun's variables (TCP
on a free loopback port) with a 20 s timeout, and the job has a 90 s deadline, so a
hang fails the tests instead of stalling them. Scenario results are compared with
single-process ``fisher_diagonal`` runs in this process (float64, rtol 1e-10) and rank
against rank (bit for bit).
"""
from __future__ import annotations

import datetime
import functools
import os
import socket
import time
import warnings

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import ftdfast
from ftdfast import distributed as D

WORLD = 2
N = 29  # odd: rank 0 gets 15 samples, rank 1 gets 14
PG_TIMEOUT_S = 20
JOB_DEADLINE_S = 90
RTOL = 1e-10


# ------------------------------------------------------------ shared setup
def small_cnn() -> nn.Module:
    """Conv-BN-ReLU-pool-conv-Linear on 8x8 inputs, BatchNorm in eval mode with non-trivial statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),  # 4x4x4
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(),                                   # 6x2x2
        nn.Linear(24, 3))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_(1.0, 0.3)
        bn.bias.normal_(0.0, 0.3)
    return model.double().eval()


def dataset(n: int = N):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def fisher(model, data, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 4)
    return ftdfast.fisher_diagonal(model, data, **kw)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, port: int) -> None:
    """What torchrun would set, then ``init_from_env`` (gloo: no CUDA here) with a 20 s timeout."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    assert D.init_from_env(timeout_s=PG_TIMEOUT_S, backend="gloo", required=True) == (rank, WORLD)
    assert D.is_distributed() and D.init_from_env() == (rank, WORLD)


def _spawn(worker, *args, deadline_s: float = JOB_DEADLINE_S) -> None:
    """Run ``worker(rank, *args)`` on WORLD processes; fail (and stop them) if they outlive the deadline."""
    ctx = torch.multiprocessing.start_processes(worker, args=args, nprocs=WORLD, join=False,
                                                start_method="spawn")
    end = time.monotonic() + deadline_s
    while not ctx.join(timeout=max(0.1, end - time.monotonic())):
        if time.monotonic() >= end:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"the distributed job did not end within {deadline_s} s: a hang")


def _record(out: dict, name: str, result) -> None:
    out[name] = {"values": dict(result), "n": result.num_samples, "meta": dict(result.meta)}


# ------------------------------------------------------------------ the job
def _sampler_loader(x, y, *, batch_size=4, **kw):
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch_size, sampler=torch.utils.data.distributed.DistributedSampler(ds, **kw))


def _handled_failures(rank: int, model, x, y) -> dict:
    """Rank 1 fails in fisher_diagonal, then in run_items; every rank records what it saw, then goes on."""
    D.REMOTE_ERROR_DELAY_S = 0.0
    seen = {}
    bad = x.clone()
    if rank == 1:
        bad[21, 0, 3, 3] = float("nan")  # in rank 1's block (samples 15..28): its batch 1, sample 2
    share = slice(0, 15) if rank == 0 else slice(15, N)  # each rank passes its own block
    try:
        fisher(model, (bad[share], y[share]))
        seen["fisher"] = "no error"
    except Exception as e:  # noqa: BLE001
        seen["fisher"] = f"{type(e).__name__}: {e}"

    def work(item):
        if rank == 1 and item == "d":
            raise KeyError("no weights for task d")
        return item

    try:
        D.run_items(list("abcdef"), work)
        seen["run_items"] = "no error"
    except Exception as e:  # noqa: BLE001
        seen["run_items"] = f"{type(e).__name__}: {e}"
        seen["run_items_notes"] = list(getattr(e, "__notes__", []))
    seen["after"] = fisher(model, (x, y)).num_samples  # the group still works
    return seen


def _worker(rank: int, tmp: str, port: int) -> None:
    _init(rank, port)
    model, (x, y) = small_cnn(), dataset()
    out, notes = {}, {}
    _record(out, "tuple", fisher(model, (x, y)))
    _record(out, "tuple-max-samples", fisher(model, (x, y), max_samples=17, batch_size=5))
    _record(out, "sampler-divisible", fisher(model, _sampler_loader(x[:28], y[:28], shuffle=True, seed=3)))
    _record(out, "sampler-padded", fisher(model, _sampler_loader(x, y, shuffle=True, seed=3)))
    _record(out, "sampler-max-samples", fisher(model, _sampler_loader(x, y, shuffle=False), max_samples=11))
    _record(out, "sampler-batch-sampler", fisher(model, DataLoader(TensorDataset(x, y), batch_sampler=(
        torch.utils.data.BatchSampler(torch.utils.data.distributed.DistributedSampler(
            TensorDataset(x, y), shuffle=False), batch_size=3, drop_last=False)))))
    ddp = nn.parallel.DistributedDataParallel(small_cnn())
    _record(out, "ddp", fisher(ddp, (x, y)))
    _record(out, "ddp-not-distributed", fisher(ddp, (x, y), distributed=False))
    own = [(x[i:i + 3], y[i:i + 3]) for i in range(rank * 15, min(N, rank * 15 + 15), 3)]
    _record(out, "own-shards", fisher(model, own))
    _record(out, "own-shards-none-mode", fisher(model, (x[rank::2], y[rank::2]), shard="none"))
    _record(out, "presharded-tuple", fisher(model, (x[rank::2], y[rank::2])))  # detected: not split again
    _record(out, "presharded-tuple-equal-sizes", fisher(model, (x[:28][rank::2], y[:28][rank::2])))
    _record(out, "float32-accumulation", fisher(model, (x, y), dtype=torch.float32))
    _record(out, "one-sample", fisher(model, (x[:1], y[:1])))  # rank 1 has no sample
    _record(out, "sampler-one-sample", fisher(model, _sampler_loader(x[:1], y[:1], shuffle=False)))
    for name, data in [("sampler-drop-last", _sampler_loader(x, y, shuffle=False, drop_last=True)),
                       ("loader-without-sampler", DataLoader(TensorDataset(x, y), batch_size=4))]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _record(out, name, fisher(model, data))
        notes[name] = [str(w.message) for w in caught if "ftdfast" in str(w.message)]
    try:
        fisher(model, (x[:0], y[:0]))
    except ValueError as e:
        notes["empty"] = [str(e)]

    # run_items: 7 items, two already in the cache; each other item must run exactly once.
    cache = os.path.join(tmp, "cache")
    os.makedirs(cache, exist_ok=True)
    if rank == 0:
        for item in ("b", "e"):
            with open(os.path.join(cache, item), "w") as f:
                f.write("before")
    D.barrier_with_timeout(PG_TIMEOUT_S)

    def work(item):
        with open(os.path.join(cache, item), "a") as f:  # "a": a second run of one item would show
            f.write(f"rank{rank};")
        return item.upper()

    share = D.run_items(list("abcdefg"), work, done=lambda item: os.path.exists(os.path.join(cache, item)))
    seen_after = {item: open(os.path.join(cache, item)).read() for item in "abcdefg"}
    out["_run_items"] = {"assigned": share.assigned, "skipped": share.skipped, "results": share.results,
                         "files": seen_after, "rank": share.rank, "world": share.world_size}
    out["_notes"] = notes
    out["_failures"] = _handled_failures(rank, model, x, y)
    torch.save(out, os.path.join(tmp, f"agree{rank}.pt"))
    # Last, nothing caught: rank 1's error must end the job (rank 0 waits REMOTE_ERROR_DELAY_S, then is stopped).
    D.REMOTE_ERROR_DELAY_S = 3.0
    if rank == 1:
        x = x.clone()
        x[27, 0, 0, 0] = float("inf")  # rank 1's batch 3, sample 0
    fisher(model, (x, y))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(each rank's saved results, the text of the error that ended the job)."""
    tmp = tmp_path_factory.mktemp("job")
    with pytest.raises(torch.multiprocessing.ProcessRaisedException) as info:
        _spawn(_worker, str(tmp), _free_port())
    return [torch.load(tmp / f"agree{r}.pt", weights_only=False) for r in range(WORLD)], str(info.value)


@pytest.fixture(scope="module")
def agreement(job):
    return job[0]


@pytest.fixture(scope="module")
def failures(job):
    return [r["_failures"] for r in job[0]]


@functools.lru_cache(maxsize=None)
def _references() -> dict:
    """The single-process Fisher each scenario must reproduce, by scenario."""
    model, (x, y) = small_cnn(), dataset()
    full = fisher(model, (x, y))
    return {
        "tuple": full,
        "tuple-max-samples": fisher(model, (x, y), max_samples=17),
        "sampler-divisible": fisher(model, (x[:28], y[:28])),
        "sampler-padded": full,
        "sampler-max-samples": fisher(model, (x[:11], y[:11])),
        "sampler-batch-sampler": full,
        "ddp": full,
        "ddp-not-distributed": full,
        "own-shards": full,
        "own-shards-none-mode": full,
        "presharded-tuple": full,
        "presharded-tuple-equal-sizes": fisher(model, (x[:28], y[:28])),
        "float32-accumulation": fisher(model, (x, y), dtype=torch.float32),
        "one-sample": fisher(model, (x[:1], y[:1])),
        "sampler-one-sample": fisher(model, (x[:1], y[:1])),
        "sampler-drop-last": fisher(model, (x[:28], y[:28])),
        "loader-without-sampler": full,
    }


SCENARIOS = ["tuple", "tuple-max-samples", "sampler-divisible", "sampler-padded", "sampler-max-samples",
             "sampler-batch-sampler", "ddp", "ddp-not-distributed", "own-shards", "own-shards-none-mode",
             "presharded-tuple", "presharded-tuple-equal-sizes",
             "float32-accumulation", "one-sample", "sampler-one-sample", "sampler-drop-last",
             "loader-without-sampler"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_distributed_equals_single_process(agreement, name):
    ref = _references()[name]
    rtol = 1e-5 if name == "float32-accumulation" else RTOL
    for rank, results in enumerate(agreement):
        got = results[name]
        assert list(got["values"]) == list(ref), f"rank {rank}: parameter names differ"
        copies = WORLD if name == "loader-without-sampler" else 1  # every rank used the whole loader
        assert got["n"] == copies * ref.num_samples, f"rank {rank}: N={got['n']}, single process N={ref.num_samples}"
        for k, v in got["values"].items():
            assert v.dtype == ref[k].dtype
            torch.testing.assert_close(v, ref[k], rtol=rtol, atol=0, msg=lambda m: f"rank {rank} {k}: {m}")
        assert got["meta"]["world_size"] == (1 if name == "ddp-not-distributed" else WORLD)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_rank_gets_the_identical_result(agreement, name):
    a, b = agreement[0][name], agreement[1][name]
    assert a["n"] == b["n"] and list(a["values"]) == list(b["values"])
    if name == "ddp-not-distributed":
        return  # each rank computed alone on the same data: equal up to rounding, checked above
    for k in a["values"]:
        assert torch.equal(a["values"][k], b["values"][k]), f"{name}: {k} differs between rank 0 and rank 1"


def test_ddp_names_have_no_module_prefix(agreement):
    assert list(agreement[0]["ddp"]["values"]) == [n for n, _ in small_cnn().named_parameters()]
    assert agreement[0]["ddp"]["meta"]["model"] == "Sequential"


def test_drop_last_sampler_warns_with_the_count(agreement):
    for results in agreement:
        (note,) = results["_notes"]["sampler-drop-last"]
        assert "leaves out 1 of the 29 samples" in note


def test_loader_without_sampler_warns(agreement):
    for results in agreement:
        (note,) = results["_notes"]["loader-without-sampler"]
        assert "no DistributedSampler" in note and "shard='none'" in note


def test_empty_data_raises_on_every_rank(agreement):
    for results in agreement:
        assert results["_notes"]["empty"] == ["the data is empty: no samples to compute the Fisher on"]


def test_run_items_runs_each_missing_item_once(agreement):
    shares = [r["_run_items"] for r in agreement]
    assert shares[0]["skipped"] == shares[1]["skipped"] == [1, 4]  # "b" and "e" were cached
    pending = [0, 2, 3, 5, 6]
    assert shares[0]["assigned"] == pending[0::2] and shares[1]["assigned"] == pending[1::2]
    for rank, share in enumerate(shares):
        assert share["results"] == {i: "abcdefg"[i].upper() for i in share["assigned"]}
    files = shares[0]["files"]  # as rank 0 saw them right after run_items returned
    for i, item in enumerate("abcdefg"):
        expected = "before" if i in (1, 4) else f"rank{0 if i in pending[0::2] else 1};"
        assert files[item] == expected, f"item {item!r}: cache file holds {files[item]!r}"


# ---------------------------------------------------------------- failures
def test_failing_fisher_rank_raises_its_own_error(failures):
    assert failures[1]["fisher"].startswith("FloatingPointError: batch 1: input sample 2")


def test_other_ranks_raise_remote_error_quoting_it(failures):
    msg = failures[0]["fisher"]
    assert msg.startswith("RemoteRankError: fisher_diagonal failed on 1 of 2 ranks; rank 0 stops too")
    assert "rank 1: FloatingPointError: batch 1: input sample 2" in msg


def test_failing_item_names_item_and_rank(failures):
    assert failures[1]["run_items"] == "KeyError: 'no weights for task d'"
    assert failures[1]["run_items_notes"] == ["run_items: running item 3 ('d') on rank 1 of 2"] or \
        not hasattr(BaseException, "add_note")
    msg = failures[0]["run_items"]
    assert msg.startswith("RemoteRankError: run_items failed on 1 of 2 ranks")
    assert "rank 1: run_items: running item 3 ('d') on rank 1 of 2: KeyError: 'no weights for task d'" in msg


def test_group_still_works_after_a_handled_failure(failures):
    assert [f["after"] for f in failures] == [N, N]


def test_failing_rank_error_ends_the_job(job):
    # Normally the launcher reports rank 1's own FloatingPointError (rank 0 is stopped while it waits
    # REMOTE_ERROR_DELAY_S); were rank 0 first, its RemoteRankError quotes the same message.
    assert "FloatingPointError: batch 3: input sample 0" in job[1]


# ------------------------------------------------------- single process
@pytest.fixture
def group_of_one(tmp_path):
    """A gloo process group of one process, in this process, for the duration of a test."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                                         timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    yield
    torch.distributed.destroy_process_group()


def test_group_of_one(group_of_one):
    model, data = small_cnn(), dataset(7)
    ref = fisher(model, data, distributed=False)
    auto = fisher(model, data)  # a group of one process: not distributed
    forced = fisher(model, data, distributed=True)
    assert (auto.meta["world_size"], forced.meta["world_size"]) == (1, 1)
    for k in ref:
        torch.testing.assert_close(forced[k], ref[k], rtol=RTOL, atol=0)
        torch.testing.assert_close(auto[k], ref[k], rtol=0, atol=0)
    assert D.world() == (0, 1) and not D.is_distributed()


def test_failed_all_reduce_says_every_rank_must_call(group_of_one, monkeypatch):
    def timeout(*args, **kwargs):
        raise torch.distributed.DistBackendError("[../gloo/transport/tcp/pair.cc] Timed out waiting 20000ms")

    monkeypatch.setattr(torch.distributed, "all_reduce", timeout)
    with pytest.raises(RuntimeError, match="Every rank of the process group must call fisher_diagonal.*"
                                           "pass distributed=False") as info:
        fisher(small_cnn(), dataset(5), distributed=True)
    assert "Timed out" in str(info.value)



def test_distributed_true_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group.*torchrun"):
        fisher(small_cnn(), dataset(4), distributed=True)


def test_bad_shard_mode():
    with pytest.raises(ValueError, match="shard='strided' is not one of"):
        fisher(small_cnn(), dataset(4), shard="strided")


def test_data_parallel_wrapper_is_unwrapped():
    model, data = small_cnn(), dataset(7)
    got = fisher(nn.DataParallel(model), data)
    ref = fisher(model, data)
    assert list(got) == list(ref) and got.meta["world_size"] == 1
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_indices_cover_in_order(n, world):
    blocks = [D.shard_indices(n, r, world) for r in range(world)]
    assert [i for b in blocks for i in b] == list(range(n))
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_assign_is_round_robin_and_complete(world):
    items = [f"task{i}" for i in range(7)]
    shares = [D.assign(items, r, world) for r in range(world)]
    assert sorted(i for s in shares for i in s) == sorted(items)
    assert shares[0][:2] == items[0:2 * world:world]


@pytest.mark.parametrize("rank, world", [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_or_world(rank, world):
    with pytest.raises(ValueError, match="rank must be|world size must be"):
        D.shard_indices(5, rank, world)


def test_helpers_without_a_job(monkeypatch):
    assert D.world() == (0, 1) and not D.is_distributed()
    D.barrier_with_timeout(1.0)  # a no-op
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert D.init_from_env(timeout_s=5) == (0, 1)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        D.init_from_env(timeout_s=5, required=True)
    share = D.run_items([3, 1, 2], lambda v: v * 10, done=lambda v: v == 1)
    assert (share.assigned, share.skipped, share.results) == ([0, 2], [1], {0: 30, 2: 20})
    with pytest.raises(ZeroDivisionError):
        D.run_items([1, 0], lambda v: 1 / v)

"""ftdfast merge on the files Hugging Face users have: save_pretrained folders (one safetensors file, shards with
their index, pytorch_model.bin and its shards) and plain state files in; a real .safetensors file, a torch file or
a folder that from_pretrained loads out; architecture mismatches and format lies are errors."""
import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file

from ftdfast import FisherDiagonal
from ftdfast.cli import main
from ftdfast.uses import fisher_merge
from ftdfast.uses.checkpoints import read_weights, write_weights
from tests.uses.tiny_hf import bert, fisher, perturbed


def save_bin(model, folder, shard=False):
    """The pytorch_model.bin layout (transformers 5 writes safetensors only): one file, or two shards + index."""
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(folder)
    state = model.state_dict()
    if not shard:
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
        return
    names = list(state)
    parts = {"pytorch_model-00001-of-00002.bin": names[:10], "pytorch_model-00002-of-00002.bin": names[10:]}
    for file, keys in parts.items():
        torch.save({k: state[k] for k in keys}, os.path.join(folder, file))
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {k: file for file, keys in parts.items() for k in keys}}, f)


LAYOUTS = {
    "safetensors": lambda m, d: m.save_pretrained(d),
    "safetensors-sharded": lambda m, d: m.save_pretrained(d, max_shard_size="4KB"),
    "bin": lambda m, d: save_bin(m, d),
    "bin-sharded": lambda m, d: save_bin(m, d, shard=True),
}


@pytest.fixture(scope="module")
def models():
    a, b = bert(0), perturbed(bert(0), 1)
    return a, b, fisher(a, 0), fisher(b, 1)


def same(got, want):
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_save_pretrained_folders_are_read_whole(models, tmp_path, layout):
    a = models[0]
    LAYOUTS[layout](a, tmp_path / "a")
    if layout.endswith("sharded"):
        assert any(n.endswith(".index.json") for n in os.listdir(tmp_path / "a"))
        assert len([n for n in os.listdir(tmp_path / "a") if "-of-0000" in n]) >= 2
    same(read_weights(str(tmp_path / "a")), a.state_dict())


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_merge_of_two_folders_writes_a_folder_that_from_pretrained_loads(models, tmp_path, layout, capsys):
    from transformers import BertForSequenceClassification
    a, b, fa, fb = models
    for name, m, f in (("a", a, fa), ("b", b, fb)):
        LAYOUTS[layout](m, tmp_path / name)
        f.save(tmp_path / f"f{name}.pt")  # names "hf.bert...": a Fisher of the Logits wrapper
    (tmp_path / "a" / "tokenizer_config.json").write_text("{}")
    out = tmp_path / "merged"
    rc = main(["merge", "--fisher", str(tmp_path / "fa.pt"), str(tmp_path / "fb.pt"),
               "--weights", str(tmp_path / "a"), str(tmp_path / "b"), "--eps", "1e-4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer_config.json"]
    want = fisher_merge([a, b], [fa, fb], eps=1e-4)
    same(BertForSequenceClassification.from_pretrained(str(out)).state_dict(), want)
    same(load_file(str(out / "model.safetensors")), want)


@pytest.mark.parametrize("name,reader", [
    ("merged.safetensors", lambda p: load_file(p)),
    ("merged.pt", lambda p: torch.load(p, weights_only=True)),
    ("merged.bin", lambda p: torch.load(p, weights_only=True)),
], ids=["safetensors", "pt", "bin"])
def test_the_extension_says_the_format(models, tmp_path, name, reader, capsys):
    a, b, fa, fb = models
    torch.save(a.state_dict(), tmp_path / "a.pt")
    b.save_pretrained(tmp_path / "b")  # a folder and a file mixed
    fa.save(tmp_path / "fa.pt")
    fb.save(tmp_path / "fb.pt")
    rc = main(["merge", "--fisher", str(tmp_path / "fa.pt"), str(tmp_path / "fb.pt"),
               "--weights", str(tmp_path / "a.pt"), str(tmp_path / "b"), "--out", str(tmp_path / name)])
    assert rc == 0, capsys.readouterr().err
    same(reader(str(tmp_path / name)), fisher_merge([a, b], [fa, fb]))
    assert os.listdir(tmp_path).count(name) == 1 and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_folder_out_from_state_files_has_weights_only(models, tmp_path):
    a, b, fa, fb = models
    merged = fisher_merge([a, b], [fa, fb])
    text = write_weights(merged, str(tmp_path / "out") + "/", [])
    assert os.listdir(tmp_path / "out") == ["model.safetensors"] and "no config.json" in text
    same(read_weights(str(tmp_path / "out")), merged)


def test_a_different_architecture_is_an_error_naming_the_fields(models, tmp_path, capsys):
    a, _, fa, _ = models
    a.save_pretrained(tmp_path / "a")
    fa.save(tmp_path / "fa.pt")
    for field, value in (("hidden_act", "relu"), ("num_hidden_layers", 2)):
        other = bert(0, **{field: value})
        other.save_pretrained(tmp_path / field)
        rc = main(["merge", "--fisher", str(tmp_path / "fa.pt"), str(tmp_path / "fa.pt"), "--weights",
                   str(tmp_path / "a"), str(tmp_path / field), "--out", str(tmp_path / f"{field}.safetensors")])
        err = capsys.readouterr().err
        assert rc == 2 and "are different architectures: their config.json differ in 1 field(s)" in err
        assert f"{field}: {a.config.to_dict()[field]!r} vs {value!r}" in err
    assert not list(tmp_path.glob("*.safetensors"))


@pytest.mark.parametrize("setup,argv,match", [
    (lambda d: torch.save({"x": torch.ones(1)}, d / "lie.safetensors"), ["lie.safetensors"],
     "lie.safetensors: not a readable safetensors file"),
    (lambda d: torch.save({"x": torch.ones(1)}, d / "w.ckpt"), ["w.ckpt"], r"the extension '.ckpt' names no weights"),
    (lambda d: os.makedirs(d / "empty"), ["empty"], "empty: a folder without model weights"),
    (lambda d: torch.save({"x": torch.ones(1)}, d / "w.pt"), ["w.pt", "--out", "m.ckpt"],
     r"m.ckpt: the extension '.ckpt' names no weights format \(--out\)"),
    (lambda d: (torch.save({"x": torch.ones(1)}, d / "w.pt"), os.makedirs(d / "full"), (d / "full" / "f").touch()),
     ["w.pt", "--out", "full"], "full: the output folder exists and is not empty"),
], ids=["torch-pickle-named-safetensors", "unknown-extension-in", "folder-without-weights", "unknown-extension-out",
        "non-empty-out-folder"])
def test_io_errors(tmp_path, setup, argv, match, capsys):
    setup(tmp_path)
    FisherDiagonal({"x": torch.ones(1)}, 1).save(tmp_path / "f.pt")
    weights, out = argv[0], (argv[2] if len(argv) > 2 else "m.safetensors")
    rc = main(["merge", "--fisher", str(tmp_path / "f.pt"), "--weights", str(tmp_path / weights),
               "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(match, err), err

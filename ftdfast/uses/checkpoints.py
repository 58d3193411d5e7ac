"""Model weights on disk, as ``ftdfast merge`` reads and writes them.

Read: a plain state file (``.safetensors``; ``.pt``/``.pth``/``.bin`` written by ``torch.save``,
possibly a checkpoint dict holding the state under ``"state_dict"``), or a Hugging Face
``save_pretrained`` folder (``model.safetensors``, sharded ``model-0000k-of-0000n.safetensors``
with ``model.safetensors.index.json``, ``pytorch_model.bin`` or its sharded index).

Write: the file name's extension says the format (``.safetensors``: safetensors; ``.pt``,
``.pth``, ``.bin``: ``torch.save``); a folder (an existing one, a name ending with ``/``, or a
name without extension when a source was a folder) gets the ``save_pretrained`` layout:
``model.safetensors`` and the non-weight files (``config.json``, tokenizer files, ...) of a
source folder, so that ``from_pretrained(folder)`` loads it. Every write is atomic.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..atomic import _umask, atomic_torch_save, atomic_write_bytes
from ..data.formats import first_line

SAFETENSORS_WEIGHTS = "model.safetensors"
# The weight files of a save_pretrained folder, in the order transformers prefers them.
PRETRAINED_WEIGHTS = (SAFETENSORS_WEIGHTS, SAFETENSORS_WEIGHTS + ".index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json")
# Weights in other frameworks' formats: never copied into a merged folder (they would be the first model's).
STALE_WEIGHT_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
# config.json fields that do not change what the weights compute (names, bookkeeping, training-time options).
CONFIG_FREE_FIELDS = frozenset({"_name_or_path", "transformers_version", "torch_dtype", "dtype", "id2label",
                                "label2id", "problem_type", "finetuning_task", "task_specific_params",
                                "_commit_hash", "use_cache", "output_attentions", "output_hidden_states",
                                "return_dict", "initializer_range", "gradient_checkpointing"})


def _read_torch(path: str) -> Dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: whatever torch.load raises
        raise ValueError(f"{path}: not a readable torch.save state_dict file ({first_line(e)})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict (a dict of tensors)")
    return state


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); a .safetensors "
                         "name must hold the safetensors format") from None


def _write_torch(state: Dict, path: str) -> None:
    atomic_torch_save(state, path)


def _write_safetensors(state: Dict, path: str) -> None:
    from safetensors.torch import save
    odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise ValueError(f"{path}: safetensors holds tensors only, but entry {odd!r} is a {type(state[odd]).__name__}; "
                         "write a .pt file instead")
    # contiguous, unshared copies: safetensors refuses tensors that share memory (tied weights)
    atomic_write_bytes(path, save({k: v.detach().contiguous().clone() for k, v in state.items()},
                                  metadata={"format": "pt"}))


@dataclass(frozen=True)
class Format:
    """How one file extension is read and written."""
    name: str
    read: Callable[[str], Dict[str, torch.Tensor]]
    write: Callable[[Dict, str], None]


FORMATS: Dict[str, Format] = {
    ".safetensors": Format("safetensors", _read_safetensors, _write_safetensors),
    ".pt": Format("torch.save", _read_torch, _write_torch),
    ".pth": Format("torch.save", _read_torch, _write_torch),
    ".bin": Format("torch.save", _read_torch, _write_torch),
}


def _format_of(path: str, option: str) -> Format:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: the extension {ext or '(none)'!r} names no weights format ({option}); use one of "
                         f"{', '.join(FORMATS)}, or a save_pretrained folder")
    return FORMATS[ext]


def _read_index(path: str) -> Dict[str, torch.Tensor]:
    """A sharded checkpoint: the index's ``weight_map`` (name -> shard file) and every shard it names."""
    try:
        with open(path) as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a sharded-checkpoint index (a JSON with a 'weight_map'): {e}") from None
    folder, state = os.path.dirname(path), {}
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise FileNotFoundError(f"{path} names the shard {shard!r}, which is not in {folder}")
        state.update(_format_of(shard_path, "a shard").read(shard_path))
    missing = [k for k in weight_map if k not in state]
    if missing:
        raise ValueError(f"{path}: the shards lack {len(missing)} entries of its weight_map, e.g. {missing[0]!r}")
    return state


def weights_file(folder: str) -> str:
    """The weights of a ``save_pretrained`` folder: the first of :data:`PRETRAINED_WEIGHTS` present."""
    for name in PRETRAINED_WEIGHTS:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"{folder}: a folder without model weights; a save_pretrained folder holds one of "
                            f"{', '.join(PRETRAINED_WEIGHTS)}")


def read_weights(path: str, option: str = "--weights") -> Dict[str, torch.Tensor]:
    """The state_dict (name -> tensor) stored at ``path``: a state file (format by extension, see
    :data:`FORMATS`), a sharded-checkpoint index (``*.index.json``) or a ``save_pretrained`` folder.
    ``option`` names the argument in errors."""
    if os.path.isdir(path):
        path = weights_file(path)
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file or folder ({option})")
    if path.endswith(".index.json"):
        return _read_index(path)
    return _format_of(path, option).read(path)


def _config(folder: str) -> Optional[dict]:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _free(field: str) -> bool:
    return field in CONFIG_FREE_FIELDS or "dropout" in field


def check_same_architecture(sources: Sequence[str]) -> None:
    """Every source folder's ``config.json`` agrees with the first one's on every field that
    changes what the weights compute (all but :data:`CONFIG_FREE_FIELDS` and dropout rates).

    Raises:
        ValueError naming the fields that differ, with both values.
    """
    folders = [s for s in sources if os.path.isdir(s)]
    configs = [(s, _config(s)) for s in folders]
    configs = [(s, c) for s, c in configs if c is not None]
    if len(configs) < 2:
        return
    (first, c0), rest = configs[0], configs[1:]
    for src, c in rest:
        diff = sorted(k for k in set(c0) | set(c) if not _free(k) and c0.get(k) != c.get(k))
        if diff:
            shown = "; ".join(f"{k}: {c0.get(k)!r} vs {c.get(k)!r}" for k in diff[:5])
            raise ValueError(f"{first} and {src} are different architectures: their config.json differ in "
                             f"{len(diff)} field(s) ({shown}). Merging needs models of one architecture (e.g. "
                             "fine-tuned from one checkpoint)")


def out_is_folder(out: str, sources: Sequence[str]) -> bool:
    """Whether ``--out`` names a folder: an existing one, a name ending with a path separator, or a
    name without extension when a source is a ``save_pretrained`` folder."""
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return True
    return not os.path.splitext(out)[1] and any(os.path.isdir(s) for s in sources)


def _extra_files(folder: str) -> List[str]:
    """The folder's files that are not weights: config, generation config, tokenizer, README..."""
    return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))
                  and not n.endswith(".index.json") and not n.lower().endswith(STALE_WEIGHT_EXTENSIONS))


def write_weights(state: Dict, out: str, sources: Sequence[str] = ()) -> str:
    """Write ``state`` to ``out`` (atomically); returns a phrase saying what was written.

    A file gets the format its extension names (:data:`FORMATS`; another extension is an
    error). A folder (:func:`out_is_folder`) gets ``model.safetensors`` and the non-weight
    files of the first source that is a folder; it must not exist or be empty, and appears
    whole or not at all.
    """
    if not out_is_folder(out, sources):
        fmt = _format_of(out, "--out")
        fmt.write(state, out)
        return f"{out} ({fmt.name})"
    out = out.rstrip("/" + os.sep) or out
    if os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f"{out}: the output folder exists and is not empty; name a new or empty folder")
    like = next((s for s in sources if os.path.isdir(s)), None)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
        _write_safetensors(state, os.path.join(tmp, SAFETENSORS_WEIGHTS))
        copied = _extra_files(like) if like else []
        for name in copied:
            shutil.copy2(os.path.join(like, name), os.path.join(tmp, name))
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if like is None:
        return f"{out}/{SAFETENSORS_WEIGHTS} (no source folder: no config.json, so from_pretrained needs one added)"
    return f"{out}/ ({SAFETENSORS_WEIGHTS}; {', '.join(copied) or 'no other files'} from {like})"

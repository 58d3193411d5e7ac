"""The Hugging Face EWC example of docs/uses.md, run as written."""
import os

import torch

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "uses.md")
MARK = "<!-- this block runs in tests/uses/test_docs.py -->"


def doc_block():
    text = open(DOC).read()
    start = text.index("```python\n", text.index(MARK)) + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_hugging_face_ewc_example_runs_and_pulls_towards_task_a():
    namespace = {}
    exec(compile(doc_block(), "docs/uses.md", "exec"), namespace)  # noqa: S102 - the doc's own code
    model, ewc, F = namespace["model"], namespace["ewc"], namespace["F"]
    assert model.training  # the example restores train mode for task B: dropout is on
    assert all(k.startswith("hf.") for k in F) and ewc.num_tasks == 1
    assert set(ewc.names) == {n for n, _ in model.named_parameters()}  # every parameter penalized, HF names
    model.zero_grad()
    penalty = ewc.penalty(model)
    assert penalty.requires_grad and float(penalty.detach()) > 0  # task B moved the weights away from the anchor
    penalty.backward()
    anchor = {n: a for n, (_, a) in ewc._terms[0].items()}
    fisher = {n[len("hf."):]: v for n, v in F.items()}
    for n, p in model.named_parameters():  # d penalty / d theta = strength * F * (theta - theta*)
        want = 100.0 * fisher[n].to(p.dtype) * (p.detach() - anchor[n])
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-9)

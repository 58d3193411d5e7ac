"""EWC: the penalty against a hand computation, several tasks, online decay, wrapped and frozen models, errors."""
import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.uses import EWC


def tiny(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).to(dtype)


def fisher_of(model, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {n: scale * torch.rand(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}


def value(t):
    return t.detach().item()


def hand_penalty(model, terms, strength):
    """strength/2 * sum over terms and entries of F (theta - anchor)^2, as Python floats."""
    total = 0.0
    params = dict(model.named_parameters())
    for fisher, anchor in terms:
        for n, f in fisher.items():
            for fi, ti, ai in zip(f.reshape(-1).tolist(), params[n].reshape(-1).tolist(),
                                  anchor[n].reshape(-1).tolist()):
                total += fi * (ti - ai) ** 2
    return strength / 2 * total


def moved(model, by=0.1, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_penalty_and_gradient_match_the_hand_computation():
    model = tiny()
    fisher = fisher_of(model)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWC(model, fisher, strength=3.0)
    assert value(ewc.penalty(model)) == 0.0
    moved(model)
    pen = ewc.penalty(model)
    assert pen.shape == () and pen.dtype == torch.float64 and pen.requires_grad
    assert value(pen) == pytest.approx(hand_penalty(model, [(fisher, anchor)], 3.0), rel=1e-12)
    pen.backward()
    for n, p in model.named_parameters():  # d/dtheta = strength * F * (theta - anchor)
        torch.testing.assert_close(p.grad, 3.0 * fisher[n] * (p.detach() - anchor[n]), rtol=1e-12, atol=0)


def test_the_default_anchor_is_a_copy_taken_at_construction():
    model = tiny()
    fisher = fisher_of(model)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWC(model, fisher)
    moved(model)
    assert value(ewc.penalty(model)) == pytest.approx(hand_penalty(model, [(fisher, anchor)], 1.0), rel=1e-12)


def test_an_explicit_anchor_state_dict_with_buffers_and_ddp_names():
    model = tiny()
    fisher = fisher_of(model)
    anchor = {"module." + n: torch.zeros_like(p) for n, p in model.named_parameters()}
    anchor["module.some_buffer"] = torch.ones(4)
    ewc = EWC(model, fisher, anchor=anchor, strength=0.5)
    zeros = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    assert value(ewc.penalty(model)) == pytest.approx(hand_penalty(model, [(fisher, zeros)], 0.5), rel=1e-12)


def test_several_tasks_keep_one_term_each():
    model = tiny()
    f1, a1 = fisher_of(model, 1), {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWC(model, f1, strength=2.0)
    moved(model, seed=6)
    f2, a2 = fisher_of(model, 2), {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc.add_task(model, f2)
    moved(model, seed=7)
    assert ewc.num_tasks == 2
    assert value(ewc.penalty(model)) == pytest.approx(hand_penalty(model, [(f1, a1), (f2, a2)], 2.0), rel=1e-12)


@pytest.mark.parametrize("decay", [1.0, 0.5, 0.0], ids=["decay1", "decay0.5", "decay0"])
def test_online_ewc_decays_the_fisher_and_moves_the_anchor(decay):
    model = tiny()
    f1 = fisher_of(model, 1)
    ewc = EWC(model, f1, strength=2.0, online=True, decay=decay)
    moved(model, seed=6)
    f2, a2 = fisher_of(model, 2), {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc.add_task(model, f2)
    f3 = fisher_of(model, 3)
    moved(model, seed=7)
    a3 = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc.add_task(model, f3)
    moved(model, seed=8)
    fstar = {n: decay * (decay * f1[n] + f2[n]) + f3[n] for n in f1}
    assert ewc.num_tasks == 3 and len(ewc._terms) == 1
    assert value(ewc.penalty(model)) == pytest.approx(hand_penalty(model, [(fstar, a3)], 2.0), rel=1e-12)
    del a2


def test_frozen_parameters_are_skipped():
    model = tiny()
    fisher = fisher_of(model)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWC(model, fisher)
    moved(model)
    model[0].weight.requires_grad_(False)
    trainable = {n: f for n, f in fisher.items() if n != "0.weight"}
    assert value(ewc.penalty(model)) == pytest.approx(hand_penalty(model, [(trainable, anchor)], 1.0), rel=1e-12)
    for p in model.parameters():
        p.requires_grad_(False)
    pen = ewc.penalty(model)
    assert pen.shape == () and value(pen) == 0.0 and pen.dtype == torch.float64


def test_a_fisher_of_a_partly_frozen_model_from_fisher_diagonal():
    model = tiny()
    model[2].bias.requires_grad_(False)
    x, y = torch.randn(9, 3, dtype=torch.float64), torch.randint(0, 2, (9,))
    fisher = ftdfast.fisher_diagonal(model, (x, y), progress=False, backend="loop")
    assert "2.bias" not in fisher
    ewc = EWC(model, fisher)  # strict: every trainable parameter has an entry; the frozen one needs none
    moved(model)
    assert value(ewc.penalty(model)) > 0
    assert set(ewc.names) == {"0.weight", "0.bias", "2.weight"}


def test_wrapped_models_either_way():
    model = tiny()
    fisher = fisher_of(model)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapped = nn.DataParallel(model)  # CPU: no devices, but the module. names of any wrapper
    assert all(n.startswith("module.") for n, _ in wrapped.named_parameters())
    ewc = EWC(wrapped, {"module." + n: f for n, f in fisher.items()})
    moved(model)
    want = hand_penalty(model, [(fisher, anchor)], 1.0)
    assert value(ewc.penalty(wrapped)) == pytest.approx(want, rel=1e-12)
    assert value(ewc.penalty(model)) == pytest.approx(want, rel=1e-12)
    assert value(EWC(model, fisher, anchor=anchor).penalty(wrapped)) == pytest.approx(want, rel=1e-12)


def test_inside_ddp_on_a_process_group_of_one(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = tiny(torch.float32)
        ddp = nn.parallel.DistributedDataParallel(model)
        ewc = EWC(ddp, fisher_of(model), strength=1e3)
        anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ddp(x), y) + ewc.penalty(ddp)
            loss.backward()
            opt.step()
        # the gradient of the penalty reached the parameters through DDP's reducer
        assert all(p.grad is not None for p in model.parameters())
        assert value(ewc.penalty(ddp)) == pytest.approx(
            hand_penalty(model, [(fisher_of(model), anchor)], 1e3), rel=1e-5)
    finally:
        torch.distributed.destroy_process_group()


def test_an_optimizer_loop_on_the_penalty_alone_returns_to_the_anchor():
    model = tiny()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWC(model, fisher_of(model, scale=1.0), strength=1.0)
    moved(model, by=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        ewc.penalty(model).backward()
        opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), anchor[n], rtol=0, atol=1e-3)


def test_device_and_dtype_follow_the_model():
    model = tiny(torch.float32)
    fisher = fisher_of(model)  # float64
    ewc = EWC(model, fisher)
    moved(model)
    assert ewc.penalty(model).dtype == torch.float32
    model.double()  # moved after construction: the stored copies follow
    pen = ewc.penalty(model)
    assert pen.dtype == torch.float64


@pytest.mark.parametrize("make,match", [
    (lambda m, f: EWC(m, {**f, "3.weight": torch.ones(2)}), "fisher has an entry '3.weight' that the model lacks"),
    (lambda m, f: EWC(m, {**f, "0.bias": torch.ones(3)}), r"fisher\['0.bias'\] has shape \(3,\)"),
    (lambda m, f: EWC(m, {k: v for k, v in f.items() if k != "2.weight"}), "trainable parameter '2.weight'"),
    (lambda m, f: EWC(m, {**f, "0.bias": -torch.ones(2)}), "holds -1.0: a Fisher diagonal is finite and >= 0"),
    (lambda m, f: EWC(m, f, anchor={"0.weight": torch.zeros(2, 3)}),
     "the Fisher has an entry '0.bias' that anchor lacks"),
    (lambda m, f: EWC(m, f, anchor={k: torch.zeros(1) for k in f}), r"anchor\['0.weight'\] is \(1,\)"),
    (lambda m, f: EWC(m, f, decay=0.9), "online EWC only"),
    (lambda m, f: EWC(m, f, strength=-1.0), "strength must be"),
    (lambda m, f: EWC(m, [1, 2]), "fisher must be an nn.Module or a mapping"),
], ids=["unknown-name", "wrong-shape", "missing-trainable", "negative", "anchor-missing", "anchor-shape",
        "decay-not-online", "negative-strength", "not-a-mapping"])
def test_errors_name_the_problem(make, match):
    model = tiny()
    with pytest.raises((ValueError, TypeError), match=match):
        make(model, fisher_of(model))


def test_strict_false_leaves_a_new_head_unpenalized_and_changed_models_are_caught():
    model = tiny()
    fisher = {k: v for k, v in fisher_of(model).items() if not k.startswith("2.")}
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWC(model, fisher, strict=False)
    moved(model)
    assert value(ewc.penalty(model)) == pytest.approx(hand_penalty(model, [(fisher, anchor)], 1.0), rel=1e-12)
    with pytest.raises(ValueError, match="EWC's penalized parameters has an entry '0.weight'.* that the model lacks"):
        ewc.penalty(nn.Sequential(nn.Identity(), nn.Linear(2, 2)))


def test_state_dict_round_trip_through_a_file(tmp_path):
    model = tiny()
    ewc = EWC(model, fisher_of(model, 1), strength=2.0, online=True, decay=0.5)
    moved(model, seed=6)
    ewc.add_task(model, fisher_of(model, 2))
    moved(model, seed=7)
    torch.save(ewc.state_dict(), tmp_path / "ewc.pt")
    back = EWC.from_state_dict(torch.load(tmp_path / "ewc.pt", weights_only=True))
    assert (back.num_tasks, back.online, back.decay, back.strength) == (2, True, 0.5, 2.0)
    assert value(back.penalty(model)) == value(ewc.penalty(model))
    with pytest.raises(ValueError, match="not an EWC state_dict"):
        EWC.from_state_dict({"terms": []})


def test_online_ewc_with_a_parameter_new_in_the_second_task():
    model = tiny()
    f1 = {k: v for k, v in fisher_of(model, 1).items() if k != "2.bias"}
    ewc = EWC(model, f1, online=True, decay=0.5, strict=False)
    moved(model, seed=6)
    f2 = fisher_of(model, 2)
    a2 = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc.add_task(model, f2)
    moved(model, seed=7)
    fstar = {n: 0.5 * f1.get(n, torch.zeros_like(f2[n])) + f2[n] for n in f2}
    assert value(ewc.penalty(model)) == pytest.approx(hand_penalty(model, [(fstar, a2)], 1.0), rel=1e-12)
    with pytest.raises(ValueError, match="EWC's penalized parameters has an entry '0.weight'.* that the model lacks"):
        ewc.add_task(nn.Sequential(nn.Identity(), nn.Linear(2, 2)), {}, anchor=None)


def test_a_bfloat16_model_keeps_tiny_fisher_entries():
    model = tiny(torch.bfloat16)
    fisher = fisher_of(model, scale=1e-9)  # 0 in float16, 3 digits in bfloat16
    anchor = {n: p.detach().double() for n, p in model.named_parameters()}
    ewc = EWC(model, fisher, strength=1e9)
    moved(model, by=0.5)
    pen = ewc.penalty(model)
    assert pen.dtype == torch.bfloat16 and pen.requires_grad
    want = hand_penalty(model, [(fisher, anchor)], 1e9)
    assert want > 0.01 and value(pen) == pytest.approx(want, rel=2e-2)
    pen.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in model.parameters())

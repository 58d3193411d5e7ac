"""A two-layer network small enough to take its per-sample gradients by hand (NumPy, float64).

net(x) = W2 relu(W1 x + b1) + b2, parameters named like ``nn.Sequential(Linear, ReLU, Linear)``:
"0.weight" (H, I), "0.bias" (H,), "2.weight" (C, H), "2.bias" (C,); the head is "2".
"""
import numpy as np
import torch
import torch.nn as nn


def make_net(W1, b1, W2, b2) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(W1.shape[1], W1.shape[0]), nn.ReLU(), nn.Linear(W2.shape[1], W2.shape[0]))
    with torch.no_grad():
        for p, v in zip(net.parameters(), (W1, b1, W2, b2)):
            p.copy_(torch.as_tensor(v, dtype=torch.float32))
    return net.eval()


def params_of(net: nn.Sequential):
    return [p.detach().double().numpy() for p in net.parameters()]


def per_sample_squares(W1, b1, W2, b2, x, label_weights):
    """sum over labels c of label_weights[n, c] * (d CE(net(x_n), c) / d theta)^2, averaged over n
    (a dict name -> array).

    label_weights one-hot of the true labels gives the empirical Fisher, the softmax probabilities the exact one.
    """
    names = ("0.weight", "0.bias", "2.weight", "2.bias")
    acc = {k: 0.0 for k in names}
    for n in range(len(x)):
        a = W1 @ x[n] + b1
        h = np.maximum(a, 0)
        z = W2 @ h + b2
        p = np.exp(z - z.max())
        p /= p.sum()
        for c, w in enumerate(label_weights[n]):
            g = p - np.eye(len(p))[c]          # d CE / d z
            dh = W2.T @ g * (a > 0)           # d CE / d a
            grads = (np.outer(dh, x[n]), dh, np.outer(g, h), g)
            for k, gk in zip(names, grads):
                acc[k] = acc[k] + w * gk ** 2
    return {k: v / len(x) for k, v in acc.items()}


def softmax_rows(W1, b1, W2, b2, x):
    z = np.maximum(x @ W1.T + b1, 0) @ W2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def hellinger(Fa, Fb, names):
    a = np.concatenate([Fa[k].ravel() for k in names])
    b = np.concatenate([Fb[k].ravel() for k in names])
    return np.linalg.norm(np.sqrt(a / a.sum()) - np.sqrt(b / b.sum())) / np.sqrt(2)


def one_minus_cosine(Fa, Fb, names):
    a = np.concatenate([Fa[k].ravel() for k in names])
    b = np.concatenate([Fb[k].ravel() for k in names])
    return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

"""Classical (Torgerson) multidimensional scaling, in NumPy."""
from __future__ import annotations

import numpy as np


def classical_mds(D: np.ndarray, dim: int = 2) -> np.ndarray:
    """Coordinates X (K, dim) whose Euclidean distances approximate the symmetric distances D (K, K).

    ``B = -1/2 J (D*D) J`` with the centering ``J = I - 1/K``; X holds the top ``dim``
    eigenvectors of B scaled by the square roots of their eigenvalues (negative eigenvalues,
    from a D that is not Euclidean, count as 0). When D is Euclidean in ``dim`` dimensions
    the pairwise distances of X equal D (X is then D's configuration up to a rotation,
    reflection and translation). Each axis is signed so its largest-magnitude coordinate is
    positive, which makes the output deterministic. Columns beyond K are zeros.
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"classical MDS needs a square (K, K) distance matrix, got shape {list(D.shape)}")
    if not np.isfinite(D).all():
        raise ValueError("classical MDS needs finite distances; the matrix has NaN or infinite entries")
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not np.allclose(D, D.T, rtol=0, atol=1e-12 * max(1.0, float(np.abs(D).max(initial=0.0)))):
        raise ValueError("classical MDS needs a symmetric matrix; symmetrize it first, e.g. (D + D.T) / 2")
    K = D.shape[0]
    X = np.zeros((K, dim))
    if K == 0:
        return X
    J = np.eye(K) - 1.0 / K
    B = -0.5 * J @ (D * D) @ J
    w, V = np.linalg.eigh((B + B.T) / 2)
    order = np.argsort(w)[::-1][:min(dim, K)]
    coords = V[:, order] * np.sqrt(np.clip(w[order], 0.0, None))
    for j in range(coords.shape[1]):
        if coords[np.argmax(np.abs(coords[:, j])), j] < 0:
            coords[:, j] = -coords[:, j]
    X[:, :coords.shape[1]] = coords
    return X

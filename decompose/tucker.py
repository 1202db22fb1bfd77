"""Shared-core Tucker factorization of a stack of weight matrices.

W[i] ≈ U · (Σ_k P[i, k] · G[k]) · V, i.e. the Tucker form W ≈ G ×₀ P ×₁ U ×₂ Vᵀ with core G (l, d, d),
written against tensorly. Two initialisers:

- `decompose_hooi`: tensorly's Tucker/HOOI (`tensorly.decomposition.tucker`), as the paper's code uses it.
- `decompose_fast`: a sequentially truncated HOSVD whose factor subspaces come from h x h Gram matrices
  (never an SVD of an h x (n·h) unfolding) and whose mode-0 factor comes from the small projected cores,
  optionally followed by HOOI sweeps computed the same way.

References
----------
Ren et al., "Exploring Extreme Parameter Compression for Pre-trained Language Models", ICLR 2022.
Vannieuwenhoven, Vandebril, Meerbergen, "A new truncation strategy for the higher-order singular value
decomposition", SIAM J. Sci. Comput. 34(2), 2012 (ST-HOSVD).
De Lathauwer, De Moor, Vandewalle, "On the best rank-(R1, R2, ..., RN) approximation of higher-order
tensors", SIAM J. Matrix Anal. Appl. 21(4), 2000 (HOOI).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorly as tl
import torch
from tensorly.decomposition import tucker as tl_tucker


@dataclasses.dataclass
class SharedTucker:
    """Factors of W[i] ≈ U (Σ_k P[i,k] G[k]) V.

    Attributes
    ----------
    P : (n, l) mixing matrix, one row per stacked block.
    U : (h, d) output-side factor shared by every block.
    G : (l, d, d) bank of small cores.
    V : (d, h) input-side factor shared by every block.
    iterations : HOOI sweeps actually run after the initialisation.
    """

    P: torch.Tensor
    U: torch.Tensor
    G: torch.Tensor
    V: torch.Tensor
    iterations: int = 0

    def reconstruct(self) -> torch.Tensor:
        """Rebuild the full (n, h, h) stack; for measuring error, never for a forward pass."""
        with tl.backend_context("pytorch"):
            return tl.tucker_to_tensor((self.G, [self.P, self.U, self.V.T]))


def _top_eigvecs(gram: torch.Tensor, k: int) -> torch.Tensor:
    """Leading k eigenvectors of a symmetric PSD matrix, largest first, with a deterministic sign."""
    _, vecs = torch.linalg.eigh(gram)
    top = vecs[:, -k:].flip(-1)
    # Fix the sign so that results do not depend on the LAPACK build: largest entry of each column positive.
    idx = top.abs().argmax(dim=0)
    signs = torch.sign(top[idx, torch.arange(k)])
    signs[signs == 0] = 1
    return top * signs


def _mode_gram(t: torch.Tensor, mode: int) -> torch.Tensor:
    """Gram matrix of the mode-`mode` unfolding: unfold(t, mode) @ unfold(t, mode).T."""
    if mode == t.ndim - 1:
        m = t.reshape(-1, t.shape[-1])  # the last mode needs no unfolding copy
        return m.T @ m
    with tl.backend_context("pytorch"):
        m = tl.unfold(t, mode)
    return m @ m.T


def _mode_dot(t: torch.Tensor, m: torch.Tensor, mode: int) -> torch.Tensor:
    """t ×_mode m for a 3-way tensor, as one (batched) matmul instead of tensorly's unfold/fold round trip."""
    if mode == 0:
        return (m @ t.reshape(t.shape[0], -1)).reshape(m.shape[0], *t.shape[1:])
    if mode == 1:
        return torch.matmul(m, t)
    return torch.matmul(t, m.T)


def _project(W: torch.Tensor, P=None, U=None, V=None) -> torch.Tensor:
    """W ×₀ Pᵀ ×₁ Uᵀ ×₂ V for the factors given, the mode that shrinks most applied first (cheapest order)."""
    steps = [(m.T, mode) for m, mode in ((P, 0), (U, 1)) if m is not None] + ([(V, 2)] if V is not None else [])
    for m, mode in sorted(steps, key=lambda s: s[0].shape[0] / s[0].shape[1]):
        W = _mode_dot(W, m, mode)
    return W


def _check_ranks(W: torch.Tensor, rank_layer: int, rank_dim: int) -> None:
    n, h, h2 = W.shape
    if h != h2:
        raise ValueError(f"blocks must be square, got {tuple(W.shape)}")
    if not 1 <= rank_dim <= h:
        raise ValueError(f"rank_dim must be in [1, {h}], got {rank_dim}")
    if not 1 <= rank_layer <= min(n, rank_dim * rank_dim):
        raise ValueError(f"rank_layer must be in [1, {min(n, rank_dim * rank_dim)}], got {rank_layer}")


def decompose_fast(W: torch.Tensor, rank_layer: int, rank_dim: int, sweeps: int = 0, tol: float = 1e-5) -> SharedTucker:
    """ST-HOSVD from Gram matrices, then up to `sweeps` HOOI sweeps (stopping early below `tol`).

    Parameters
    ----------
    W : (n, h, h) stack of blocks (float64 recommended).
    rank_layer : l, the number of cores.
    rank_dim : d, the size of each core.
    sweeps : HOOI sweeps after the one-shot initialisation (0: one-shot).
    tol : stop when the relative error improves by less than this between sweeps.

    Returns
    -------
    SharedTucker with orthonormal U, Vᵀ and P.
    """
    _check_ranks(W, rank_layer, rank_dim)
    U = _top_eigvecs(_mode_gram(W, 1), rank_dim)
    WU = _project(W, U=U)  # (n, d, h)
    V = _top_eigvecs(_mode_gram(WU, 2), rank_dim).T
    WUV = _project(WU, V=V)  # (n, d, d)
    P = _top_eigvecs(_mode_gram(WUV, 0), rank_layer)
    G = _project(WUV, P=P)
    norm_sq = W.pow(2).sum()
    err = _error_from_core(norm_sq, G)
    done = 0
    for _ in range(sweeps):
        U = _top_eigvecs(_mode_gram(_project(W, P=P, V=V), 1), rank_dim)
        V = _top_eigvecs(_mode_gram(_project(W, P=P, U=U), 2), rank_dim).T
        WUV = _project(W, U=U, V=V)
        P = _top_eigvecs(_mode_gram(WUV, 0), rank_layer)
        G = _project(WUV, P=P)
        done += 1
        new_err = _error_from_core(norm_sq, G)
        converged = err - new_err < tol
        err = new_err
        if converged:
            break
    return SharedTucker(P=P, U=U, G=G, V=V, iterations=done)


def _error_from_core(norm_sq: torch.Tensor, G: torch.Tensor) -> float:
    """Relative error of an orthonormal Tucker model whose core is the projection of W: ‖W‖² − ‖G‖²."""
    return float(torch.sqrt(torch.clamp(norm_sq - G.pow(2).sum(), min=0) / norm_sq))


def decompose_hooi(
    W: torch.Tensor,
    rank_layer: int,
    rank_dim: int,
    n_iter_max: int = 100,
    init: str = "random",
    tol: float = 1e-4,
    seed: int = 0,
) -> SharedTucker:
    """tensorly's Tucker/HOOI with the paper code's settings (init='random', n_iter_max=100)."""
    _check_ranks(W, rank_layer, rank_dim)
    with tl.backend_context("pytorch"):
        (core, factors), errors = tl_tucker(
            W, rank=[rank_layer, rank_dim, rank_dim], n_iter_max=n_iter_max, init=init, tol=tol,
            random_state=seed, return_errors=True,
        )
    P, U, Vt = factors
    return SharedTucker(P=P, U=U, G=core, V=Vt.T, iterations=len(errors))


def relative_errors(W: torch.Tensor, approx: torch.Tensor, block_types: Sequence[str]) -> dict[str, float]:
    """Relative Frobenius error ‖W − Ŵ‖ / ‖W‖ overall and per block type."""
    diff = (W - approx).pow(2).sum(dim=(1, 2))
    ref = W.pow(2).sum(dim=(1, 2))
    out = {"overall": float(torch.sqrt(diff.sum() / ref.sum()))}
    for t in dict.fromkeys(block_types):
        sel = torch.tensor([bt == t for bt in block_types])
        out[t] = float(torch.sqrt(diff[sel].sum() / ref[sel].sum()))
    return out

"""Shared-core Tucker fitted to what the blocks compute on real inputs, not to their weights.

Block i maps its input x to W_i x. With M_i = E[x xᵀ] the second moment of the inputs it really reads, the error
it makes on them is

    E‖(W_i − Ŵ_i) x‖² = tr((W_i − Ŵ_i) M_i (W_i − Ŵ_i)ᵀ),    Ŵ_i = U (Σ_k P[i,k] G[k]) V,

and the fit minimises Σ_i of that, relative to Σ_i tr(W_i M_i W_iᵀ) (`output_error`). Two steps:

1. Whitening (as ASVD and SVD-LLM do for one matrix): with one pooled moment M = S², minimising Σ‖(W_i − Ŵ_i) S‖²
   is the ordinary Tucker of the stack W_i S, and V absorbs S⁻¹ afterwards. One S for all blocks is what keeps
   the factors shared: a per-block S_i would need a V per block.
2. Alternating least squares on the exact objective, each block with its own M_i. Every factor's subproblem is
   linear least squares: U in closed form (a d x d system), P per block in closed form (an l x l system), G and V
   by conjugate gradients on their normal equations (the blocks' different M_i couple the entries of V, and the
   blocks sharing G couple the cores). Each step minimises the objective over one factor, so it never rises.

Blocks that read the same input (Q, K, V of a layer; its four FFN-input blocks) share one M_i; `inputs[i]` is the
index of block i's input in `moments`.

References
----------
Yuan et al., "ASVD: Activation-aware Singular Value Decomposition for Compressing Large Language Models", 2023.
Wang et al., "SVD-LLM: Truncation-aware Singular Value Decomposition for Large Language Model Compression", 2024.
Srebro and Jaakkola, "Weighted Low-Rank Approximations", ICML 2003.
"""
from __future__ import annotations

import torch

from .tucker import SharedTucker, decompose_fast


def sqrt_and_inverse(m: torch.Tensor, rel_floor: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """S = M^½ and S⁻¹ for a PSD moment, eigenvalues floored at rel_floor x the largest (directions the data
    never visits would otherwise make S⁻¹ explode)."""
    vals, vecs = torch.linalg.eigh(m)
    vals = vals.clamp(min=float(vals.max()) * rel_floor).sqrt()
    return (vecs * vals) @ vecs.T, (vecs / vals) @ vecs.T


def output_error(W: torch.Tensor, f: SharedTucker, moments: torch.Tensor, inputs: torch.Tensor) -> float:
    """sqrt(Σ_i tr(E_i M_i E_iᵀ) / Σ_i tr(W_i M_i W_iᵀ)): the blocks' relative output error on their inputs."""
    E = W - f.reconstruct()
    M = moments[inputs]
    num = ((E @ M) * E).sum()
    den = ((W @ M) * W).sum()
    return float(torch.sqrt(num / den))


def whitened_tucker(W: torch.Tensor, moments: torch.Tensor, inputs: torch.Tensor, rank_layer: int, rank_dim: int,
                    sweeps: int = 1) -> SharedTucker:
    """Step 1: the Tucker of W_i S with one pooled S (each input's moment scaled to unit trace first, so that no
    kind of input outweighs the others by its scale alone), V mapped back by S⁻¹."""
    per_block = moments[inputs]
    pooled = (per_block / per_block.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]).mean(0)
    S, S_inv = sqrt_and_inverse(pooled)
    f = decompose_fast(W @ S, rank_layer, rank_dim, sweeps=sweeps)
    return SharedTucker(P=f.P, U=f.U, G=f.G, V=f.V @ S_inv, iterations=f.iterations)


def _cg(apply, rhs: torch.Tensor, x: torch.Tensor, iters: int) -> torch.Tensor:
    """Conjugate gradients for a symmetric positive (semi)definite operator, from x."""
    r = rhs - apply(x)
    p, rr = r.clone(), (r * r).sum()
    for _ in range(iters):
        ap = apply(p)
        alpha = rr / (p * ap).sum().clamp(min=1e-300)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum()
        if rr_new.sqrt() <= 1e-10 * rhs.norm():
            break
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def _ridged(m: torch.Tensor, ridge: float) -> torch.Tensor:
    """m plus `ridge` times its mean diagonal: a normal-equation matrix kept invertible at any scale."""
    return m + ridge * m.trace() / m.shape[0] * torch.eye(m.shape[0], dtype=m.dtype)


def refit(W: torch.Tensor, f: SharedTucker, moments: torch.Tensor, inputs: torch.Tensor, sweeps: int = 3,
          cg_iters: int = 30, ridge: float = 1e-8) -> tuple[SharedTucker, list[float]]:
    """Step 2: `sweeps` rounds of ALS over U, G, V, P on the exact weighted objective; returns the factors and
    the output error after each round (the first entry: before)."""
    P, U, G, V = (t.clone() for t in (f.P, f.U, f.G, f.V))
    M = moments  # (g, h, h), indexed by `inputs`
    history = [output_error(W, f, moments, inputs)]
    groups = [torch.nonzero(inputs == g).flatten() for g in range(M.shape[0])]
    WM = W @ M[inputs]  # W_i M_i, the same in every round: every step's right-hand side starts from it
    for _ in range(sweeps):
        C = torch.einsum("ik,kab->iab", P, G)  # mixed cores (n, d, d)
        # U: U Σ B_i M_i B_iᵀ = Σ W_i M_i B_iᵀ with B_i = C_i V.
        B = C @ V
        BM = B @ M[inputs]
        lhs = (BM @ B.transpose(1, 2)).sum(0)
        U = (WM @ B.transpose(1, 2)).sum(0) @ torch.linalg.inv(_ridged(lhs, ridge))
        UtU = U.T @ U
        # V: Σ_g (Σ_{i∈g} A_iᵀ A_i) V M_g = Σ_i A_iᵀ W_i M_i with A_i = U C_i.
        A = U @ C
        AtA_g = torch.stack([(A[idx].transpose(1, 2) @ A[idx]).sum(0) for idx in groups])
        rhs = (A.transpose(1, 2) @ WM).sum(0)
        V = _cg(lambda v: (AtA_g @ v @ M).sum(0), rhs, V, cg_iters)
        # G: Σ_i P_ik (UᵀU C_i K_i − R_i) = 0 with K_i = V M_i Vᵀ, R_i = Uᵀ W_i M_i Vᵀ.
        K = V @ M @ V.T  # per input (g, d, d)
        R = U.T @ WM @ V.T
        rhs_g = torch.einsum("ik,iab->kab", P, R)
        G = _cg(lambda g: torch.einsum("ik,iab->kab", P, UtU @ torch.einsum("il,lab->iab", P, g) @ K[inputs]),
                rhs_g, G, cg_iters)
        # P, per block: H p = r with H_kl = tr(UᵀU G_k K_i G_lᵀ), r_k = tr(G_k R_iᵀ).
        UG = UtU @ G  # (l, d, d)
        for i in range(W.shape[0]):
            GK = UG @ K[inputs[i]]
            H = torch.einsum("kab,lab->kl", GK, G)
            r = torch.einsum("kab,ab->k", G, R[i])
            P[i] = torch.linalg.solve(_ridged(H, ridge), r)
        history.append(output_error(W, SharedTucker(P=P, U=U, G=G, V=V), moments, inputs))
    return SharedTucker(P=P, U=U, G=G, V=V, iterations=f.iterations), history

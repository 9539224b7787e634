"""ReLU SAE with an L1 penalty (Towards Monosemanticity): untied weights, unit-norm decoder rows, b_dec at the
geometric median, L1 warm-up, and resampling of dead latents at scheduled steps.

Training exploits the sparsity of the code on CPU. After the dense encoder matmul, only the active latents
(pre-activation > 0) enter the decoder, its gradients and the encoder's weight gradient: the decoder gathers the
active rows (embedding_bag), the gradient of each active activation is a sampled matrix product, and the weight
gradients are per-latent sums over the vectors where the latent fired. That is O(active * d_in) instead of three
dense [B, d_sae] x d_in matmuls; the loss and gradients are the dense ones up to float rounding (summation order).
Above SPARSE_MAX_DENSITY active entries (early in training) and on CUDA, the dense matmuls are used."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LossParts, SaeTrainer, SparseAutoencoder
from .schedules import l1_factor

# Share of [B, d_sae] entries active up to which the sparse path is used on CPU. Measured at d_in 256, d_sae 1024,
# batch 1024, one thread: the sparse step is 2-3x faster at 2-20% active and as fast as the dense one near 30%.
SPARSE_MAX_DENSITY = 0.25
# torch flags its CSR tensors as beta once per process; only sampled_addmm reads this one, a documented CPU op
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


class ReluSAE(SparseAutoencoder):
    architecture = "relu"

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()  # [..., d_sae]


def _segments(ids: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(counts [n], start offsets [n]) of a sorted id list ids [m] over 0..n-1."""
    counts = torch.bincount(ids, minlength=n)  # [n]
    return counts, counts.cumsum(0) - counts


class ReluCode(torch.autograd.Function):
    """(relu(x @ W_enc + bias) @ W_dec, sum of relu(x @ W_enc + bias), fired latents [d_sae], active count) for
    x [B, d_in] (no gradient to x), W_enc [d_in, d_sae], bias [d_sae], W_dec [d_sae, d_in]; differentiable in
    the first two outputs with respect to W_enc, bias and W_dec."""

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, bias: Tensor, W_dec: Tensor):
        B, d_sae = x.shape[0], W_enc.shape[1]
        pre = torch.addmm(bias, x, W_enc)  # [B, d_sae]
        active = pre > 0  # [B, d_sae]
        nnz = int(active.sum()) if x.device.type == "cpu" else B * d_sae
        ctx.sparse = nnz <= SPARSE_MAX_DENSITY * B * d_sae
        if ctx.sparse:
            rows, cols = active.nonzero(as_tuple=True)  # [nnz] each, token-major (rows ascending)
            vals = pre[rows, cols]  # [nnz]
            _, offsets = _segments(rows, B)
            x_hat = F.embedding_bag(cols, W_dec, offsets, per_sample_weights=vals, mode="sum")  # [B, d_in]
            fired = torch.bincount(cols, minlength=d_sae) > 0  # [d_sae]
            l1 = vals.sum()
            ctx.save_for_backward(x, W_dec, rows, cols, vals)
        else:
            f = pre.clamp_min_(0)  # [B, d_sae]
            x_hat = f @ W_dec  # [B, d_in]
            fired = f.amax(dim=0) > 0  # [d_sae]
            l1 = f.sum()
            ctx.save_for_backward(x, W_dec, f)
        count = torch.tensor(nnz) if ctx.sparse else active.sum()  # no device sync on CUDA
        ctx.mark_non_differentiable(fired, count)
        return x_hat, l1, fired, count

    @staticmethod
    def backward(ctx, g: Tensor, g_l1: Tensor, _fired: None, _count: None):
        if not ctx.sparse:
            x, W_dec, f = ctx.saved_tensors
            grad_pre = (g @ W_dec.t() + g_l1) * (f > 0)  # [B, d_sae]
            return None, x.t() @ grad_pre, grad_pre.sum(dim=0), f.t() @ g
        x, W_dec, rows, cols, vals = ctx.saved_tensors
        B, d_sae = x.shape[0], W_dec.shape[0]
        counts, _ = _segments(rows, B)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # CSR row pointers of the active pattern
        pattern = torch.sparse_csr_tensor(crow, cols, vals, (B, d_sae), check_invariants=False)
        # d loss / d activation at each active entry: (g @ W_dec^T) sampled there, plus the L1 term
        grad_vals = torch.sparse.sampled_addmm(pattern, g, W_dec.t(), beta=0.0).values() + g_l1  # [nnz]
        order = torch.argsort(cols, stable=True)  # latent-major
        _, lat_offsets = _segments(cols, d_sae)
        by_latent = rows[order]  # [nnz] the vectors each latent fired on
        # per latent i: sum over its vectors b of weight * row b of (g or x)
        grad_W_dec = F.embedding_bag(by_latent, g, lat_offsets, per_sample_weights=vals[order], mode="sum")
        grad_W_enc_t = F.embedding_bag(by_latent, x, lat_offsets, per_sample_weights=grad_vals[order], mode="sum")
        grad_bias = torch.zeros(d_sae, dtype=grad_vals.dtype, device=grad_vals.device).index_add_(0, cols, grad_vals)
        return None, grad_W_enc_t.t().contiguous(), grad_bias, grad_W_dec


class ReluTrainer(SaeTrainer):
    """Objective: mean_b ||x - x_hat||^2 + l1 * warmup(step) * mean_b ||f||_1 (decoder rows have unit norm,
    so ||f||_1 is the L1 norm of the latent contributions)."""

    sae_class = ReluSAE

    def _losses(self, x: Tensor, step: int) -> LossParts:
        sae = self.sae
        bias = sae.b_enc - sae.b_dec @ sae.W_enc  # (x - b_dec) @ W_enc + b_enc, as SparseAutoencoder.pre_acts
        x_hat, l1_sum, fired, nnz = ReluCode.apply(x, sae.W_enc, bias, sae.W_dec)
        x_hat = x_hat + sae.b_dec  # [B, d_in]
        B = x.shape[0]
        recon = (x - x_hat).pow(2).sum(dim=-1).mean()
        l1 = l1_sum / B  # f >= 0 after ReLU, so this is mean ||f||_1
        coeff = self.cfg.l1_coefficient * l1_factor(step, warmup=self.cfg.l1_warmup_steps)
        loss = recon + coeff * l1
        return LossParts(loss=loss, x_hat=x_hat, fired=fired, l0=nnz / B,
                         terms={"recon": recon.detach(), "l1": l1.detach()})

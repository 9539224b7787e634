"""What every SAE architecture shares: the weights and encode/decode, the unit-norm decoder constraint, the
activation-scale folding, and a trainer base with the optimiser, schedules, dead-latent tracking and resampling.

Weights follow dictionary_learning/SAELens: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`
(row i is latent i's direction), `b_dec [d_in]`; `encode(x) = act((x - b_dec) @ W_enc + b_enc)`,
`decode(f) = f @ W_dec + b_dec`.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Architecture, SaeConfig
from .init import activation_scale, geometric_median
from .schedules import lr_factor

EPS = 1e-8


class SparseAutoencoder(nn.Module, ABC):
    """An SAE: linear encoder, a sparsifying activation (per architecture), linear decoder with unit-norm rows."""

    architecture: ClassVar[Architecture]

    def __init__(self, cfg: SaeConfig, *, generator: torch.Generator | None = None):
        super().__init__()
        assert cfg.architecture == self.architecture, f"{type(self).__name__} built from a {cfg.architecture} config"
        self.cfg = cfg
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)  # [d_sae, d_in]
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)  # [d_sae, d_in]
        self.W_enc = nn.Parameter(W_dec.t().contiguous())  # [d_in, d_sae], starts as the decoder's transpose
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))  # [d_sae]
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))  # [d_in]
        self.activation_scale = 1.0  # the input scale folded into these weights (1.0: none)

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations [..., d_sae] of inputs [..., d_in]."""
        # (x - b_dec) @ W_enc + b_enc, written so b_dec's gradient is a vector-matrix product rather than a
        # full [B, d_in] matmul that autograd would sum over the batch. Rounding: x @ W_enc already errs by
        # ~eps * |x| * |W_enc|, and b_dec @ W_enc is no larger, so the subtraction adds error of the same order.
        return F.linear(x, self.W_enc.t(), self.b_enc - self.b_dec @ self.W_enc)  # [..., d_sae]

    @abstractmethod
    def activation(self, pre: Tensor) -> Tensor:
        """The sparsifying nonlinearity: pre-activations [..., d_sae] -> latent activations [..., d_sae] (>= 0)."""

    def encode(self, x: Tensor) -> Tensor:
        return self.activation(self.pre_acts(x))  # [..., d_sae]

    def decode(self, f: Tensor) -> Tensor:
        return F.linear(f, self.W_dec.t(), self.b_dec)  # [..., d_in]

    def forward(self, x: Tensor, output_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        f = self.encode(x)  # [..., d_sae]
        x_hat = self.decode(f)  # [..., d_in]
        return (x_hat, f) if output_features else x_hat

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale each decoder row (latent direction) to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(EPS))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Remove from W_dec.grad each row's component along that row's (unit) direction, so a step moves the
        direction without first changing its norm."""
        if self.W_dec.grad is None:
            return
        W = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(EPS)  # [d_sae, d_in]
        parallel = (self.W_dec.grad * W).sum(dim=1, keepdim=True)  # [d_sae, 1]
        self.W_dec.grad.sub_(parallel * W)

    @torch.no_grad()
    def fold_activation_scale(self, s: float) -> None:
        """Make an SAE trained on `s * x` act on raw `x`: same latents, reconstruction in raw units.
        (x - b_dec/s) @ (s W_enc) = (s x - b_dec) @ W_enc, and (f @ W_dec + b_dec) / s. Unfold with 1 / s."""
        assert s > 0, f"activation scale must be positive, got {s}"
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)
        self.activation_scale *= s


@dataclass
class LossParts:
    """One forward pass of a trainer's objective."""

    loss: Tensor  # scalar the optimiser minimises
    x_hat: Tensor  # [B, d_in] reconstruction (scaled space)
    fired: Tensor  # [d_sae] bool: latents with a non-zero activation on some vector of the batch
    l0: Tensor  # scalar: mean number of non-zero latents per vector
    terms: dict[str, Tensor] = field(default_factory=dict)  # named scalar parts of the loss


class SaeTrainer(ABC):
    """Trains one SAE: Adam with the decoder-norm constraint, lr warm-up/decay, dead-latent tracking and
    scheduled resampling. Inputs to `update` and `loss` are raw activations; the trainer multiplies them by
    the normalisation factor `scale` (1.0 when normalisation is off)."""

    sae_class: ClassVar[type[SparseAutoencoder]]

    def __init__(self, cfg: SaeConfig, init_acts: Tensor, *, device: str = "cpu"):
        assert init_acts.ndim == 2 and init_acts.shape[1] == cfg.d_in, (
            f"init_acts must be [n, d_in={cfg.d_in}], got {tuple(init_acts.shape)}")
        self.cfg = cfg
        self.device = device
        self.generator = torch.Generator().manual_seed(cfg.seed)  # CPU generator: init, resampling draws
        sample = init_acts[: cfg.init_sample_size].to(device=device, dtype=torch.float32)  # [n, d_in]
        self.scale = activation_scale(sample) if cfg.normalize_activations else 1.0
        self.sae = self.sae_class(cfg, generator=self.generator).to(device)
        with torch.no_grad():
            if cfg.b_dec_init == "geometric_median":
                self.sae.b_dec.copy_(geometric_median(sample * self.scale))
            elif cfg.b_dec_init == "mean":
                self.sae.b_dec.copy_((sample * self.scale).mean(dim=0))
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
        self.tokens_since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)  # [d_sae]
        self.n_resampled = 0

    # --- objective -------------------------------------------------------------------------------------------
    @abstractmethod
    def _losses(self, x: Tensor, step: int) -> LossParts:
        """The objective on already-scaled inputs x [B, d_in]."""

    def _scaled(self, acts: Tensor) -> Tensor:
        return acts.to(device=self.device, dtype=torch.float32) * self.scale  # [B, d_in]

    def loss(self, x: Tensor, step: int, logging: bool = False) -> Tensor | tuple[Tensor, dict[str, float]]:
        """The training objective on raw activations x [B, d_in]; with logging, also a dict of floats."""
        xs = self._scaled(x)  # [B, d_in]
        parts = self._losses(xs, step)
        if not logging:
            return parts.loss
        return parts.loss, self._log_dict(xs, parts, step)

    @torch.no_grad()
    def _log_dict(self, x: Tensor, parts: LossParts, step: int) -> dict[str, float]:
        err = (x - parts.x_hat).pow(2).sum(dim=-1)  # [B]
        var = (x - x.mean(dim=0)).pow(2).sum(dim=-1)  # [B]
        out = {
            "loss": float(parts.loss),
            "mse": float(err.mean() / x.shape[1]),  # per element, in the normalised space
            "fve": float(1.0 - err.sum() / var.sum().clamp_min(EPS)),
            "l0": float(parts.l0),
            "dead_frac": float(self.dead_mask().float().mean()),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }
        out.update({k: float(v) for k, v in parts.terms.items()})
        return out

    # --- one step --------------------------------------------------------------------------------------------
    def update(self, step: int, acts: Tensor, logging: bool = False) -> dict[str, float] | None:
        """One optimiser step on a batch of raw activations [B, d_in]; with logging, that batch's losses."""
        x = self._scaled(acts)  # [B, d_in]
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, total=cfg.steps, warmup=cfg.lr_warmup_steps,
                                             decay_start=cfg.lr_decay_start)
        self.optimizer.zero_grad(set_to_none=True)
        parts = self._losses(x, step)
        parts.loss.backward()
        self.sae.remove_parallel_decoder_grad()
        self.optimizer.step()
        self.sae.normalize_decoder()
        self._track_firing(parts.fired, x.shape[0])
        log = self._log_dict(x, parts, step) if logging else None
        if step in cfg.resample_steps:
            n = self.resample_dead(x)
            if log is not None:
                log["resampled"] = float(n)
        return log

    @torch.no_grad()
    def _track_firing(self, fired: Tensor, n_tokens: int) -> None:
        self.tokens_since_fired.add_(n_tokens)
        self.tokens_since_fired.masked_fill_(fired, 0)

    def dead_mask(self) -> Tensor:
        """[d_sae] bool: latents that have not fired on the last `dead_window_tokens` training tokens."""
        return self.tokens_since_fired >= self.cfg.dead_window_tokens

    # --- resampling (Towards Monosemanticity) ----------------------------------------------------------------
    @torch.no_grad()
    def resample_dead(self, x: Tensor) -> int:
        """Re-initialise dead latents towards inputs the SAE reconstructs badly; returns how many.

        Inputs (scaled, [B, d_in]) are drawn without replacement with probability proportional to the square of
        their reconstruction loss ||x - x_hat||^2. A resampled latent's decoder row is the drawn input minus b_dec,
        normalised; its encoder column is that direction times `resample_encoder_scale` times the mean encoder
        norm of live latents; its encoder bias is 0; its Adam moments are zeroed; its firing clock restarts.
        """
        dead = self.dead_mask()  # [d_sae]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        sae = self.sae
        loss = (x - sae(x)).pow(2).sum(dim=-1)  # [B]
        weights = loss.double().pow(2).cpu()  # [B]
        n = min(n_dead, int((weights > 0).sum()))
        if n == 0:
            return 0
        picked = torch.multinomial(weights, n, replacement=False, generator=self.generator).to(x.device)  # [n]
        idx = dead.nonzero().squeeze(1)[:n]  # [n] latents to resample
        v = x[picked] - sae.b_dec  # [n, d_in]
        dirs = v / v.norm(dim=1, keepdim=True).clamp_min(EPS)  # [n, d_in]
        live = ~dead
        enc_norm = sae.W_enc[:, live].norm(dim=0).mean() if bool(live.any()) else torch.tensor(1.0)
        sae.W_dec[idx] = dirs
        sae.W_enc[:, idx] = dirs.t() * (enc_norm * self.cfg.resample_encoder_scale)
        sae.b_enc[idx] = 0.0
        for param, index in ((sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,)), (sae.W_dec, (idx,))):
            state = self.optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0.0
        self.tokens_since_fired[idx] = 0
        self.n_resampled += n
        return n

    # --- result ----------------------------------------------------------------------------------------------
    def finalize(self) -> SparseAutoencoder:
        """A copy of the SAE with the normalisation folded in, so it acts on raw activations."""
        sae = copy.deepcopy(self.sae)
        sae.fold_activation_scale(self.scale)
        return sae.eval()

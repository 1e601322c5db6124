"""Training losses of the correspondence networks (the paper's list, the official code's forms).

Notation: F_X the condition encoder, F_Y the exemplar encoder (before the shared head); x the
condition, y the exemplar latent, z the ground-truth latent (the photo the condition was drawn
from). P = softmax_v(L(u, v)) the warp weights from the head features, with the logits
L(u, v) = max(0, <c(S_x(u)), c(S_y(v))>) / tau, c = channel-centred, channel-L2-normalised
(:func:`correlation_logits`, Eq. 5-6). n(f) = f / (||f||_2 over channels + eps), the official
``feature_normalize``. Means run over every element (PyTorch's ``l1_loss`` / ``mse_loss``).

Each loss is a small pure function; tests compare them with float64 transcriptions. The image
losses (feature matching, perceptual = one feature term, contextual) take feature maps; the
VGG-19 that makes them is ``midms_core.training.vgg`` (weights the user supplies).
"""

from __future__ import annotations

import sys
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..correspondence import coordinate_grid, correlation_logits
from ..validation import check_tensor

#: the official feature_normalize's epsilon (the later of its two definitions)
NORMALISE_EPS = sys.float_info.epsilon

__all__ = [
    "FEATURE_WEIGHTS",
    "contextual_loss",
    "correlation_logits",
    "cycle_loss",
    "domain_alignment_loss",
    "feature_matching_loss",
    "feature_normalize",
    "latent_reconstruction_loss",
    "supervised_flow_loss",
    "supervised_match_loss",
    "warp_weights",
]


def feature_normalize(features: Tensor, eps: float = NORMALISE_EPS) -> Tensor:
    """n(f) = f / (||f||_2 + eps) over channels: (B, C, h, w) -> same (not centred)."""
    return features / (features.norm(p=2, dim=1, keepdim=True) + eps)


def domain_alignment_loss(condition_encoding: Tensor, truth_encoding: Tensor, exemplar_encoding: Tensor) -> Tensor:
    """The official domain alignment term (weighted x10 in the total):

        L_domain = mean|n(F_X(x)) - n(F_Y(z))| + mean|sg(n(F_Y(y))) * n(F_X(x)) - sg(n(F_Y(y))) * n(F_Y(z))|

    condition_encoding F_X(x), truth_encoding F_Y(z), exemplar_encoding F_Y(y): (B, N, h, w),
    all before the shared head; sg = stop-gradient (the exemplar side is detached). The first
    term pulls the condition's encoding onto the encoding of the photo it was drawn from; the
    second weights the same difference by the exemplar's normalised features, as the official
    code does (its positions are not aligned with u; kept for fidelity).
    """
    for name, t in (("condition_encoding", condition_encoding), ("truth_encoding", truth_encoding),
                    ("exemplar_encoding", exemplar_encoding)):
        check_tensor("domain_alignment_loss", name, t, 4, "(B, N, h, w)", finite=False)
    cond, truth = feature_normalize(condition_encoding), feature_normalize(truth_encoding)
    ref = feature_normalize(exemplar_encoding).detach()
    return F.l1_loss(cond, truth) + F.l1_loss(ref * cond, ref * truth)


def warp_weights(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(P, Q) from logits (B, N, M): P = softmax over exemplar positions (each condition row
    sums to 1: the warp), Q = softmax of the TRANSPOSED logits over condition positions
    (B, M, N): the way back, as the cycle term uses it."""
    check_tensor("warp_weights", "logits", logits, 3, "(B, N, M)", finite=False)
    return torch.softmax(logits, dim=-1), torch.softmax(logits.transpose(1, 2), dim=-1)


def _flat(latent: Tensor) -> Tensor:
    return latent.flatten(2).transpose(1, 2)  # (B, h*w, c)


def cycle_loss(logits: Tensor, exemplar_latent: Tensor) -> Tensor:
    """L_cycle = mean|Q (P y) - y|: warp the exemplar latent onto the condition with P, back
    with Q (the transposed correlation re-softmaxed over condition positions), compare.

    logits: (B, N, M) condition x exemplar; exemplar_latent y: (B, c, hy, wy) with M = hy*wy.
    """
    check_tensor("cycle_loss", "exemplar_latent", exemplar_latent, 4, "(B, c, h, w)", finite=False)
    p, q = warp_weights(logits)
    y = _flat(exemplar_latent)
    back = q @ (p @ y)  # (B, M, c)
    return F.l1_loss(back, y)


def latent_reconstruction_loss(truth_logits: Tensor, truth_latent: Tensor) -> Tensor:
    """L_latent = mean((P_z z - z)^2): the ground-truth latent warped onto the condition by its
    OWN correlation with the condition (P_z from the logits condition x truth) must give it back
    (the official warm-up "diffusion" term).

    truth_logits: (B, N, N); truth_latent z: (B, c, h, w) on the condition grid (N = h*w).
    """
    check_tensor("latent_reconstruction_loss", "truth_latent", truth_latent, 4, "(B, c, h, w)", finite=False)
    p = torch.softmax(truth_logits, dim=-1)
    z = _flat(truth_latent)
    return F.mse_loss(p @ z, z)


def supervised_flow_loss(logits: Tensor, truth: Tensor, valid: Tensor) -> Tensor:
    """Beyond the paper: where the true correspondence is known (a deformed self-exemplar), the
    soft-argmax of P must land on it:

        L_flow = mean_b [ sum_u valid(u) * ||sum_v P(u, v) v - t(u)||_2 / max(1, sum_u valid(u)) ]

    (per sample, then the mean over the batch: the same value whether a batch is split over
    processes or not; a sample without known correspondence contributes 0).

    logits: (B, N, M), condition x exemplar, both on one (hx, wx) grid (training pairs share
    it); truth t: (B, 2, hx, wx) exemplar cells (x, y) matched by each condition cell; valid:
    (B, hx, wx) {0, 1}. Distances are in exemplar cells.
    """
    check_tensor("supervised_flow_loss", "truth", truth, 4, "(B, 2, hx, wx)")
    b, _, hx, wx = truth.shape
    m = logits.shape[-1]
    hy, wy = _exemplar_grid(m, hx, wx)
    cells = coordinate_grid(1, hy, wy, logits.device, logits.dtype).flatten(2)  # (1, 2, M)
    p = torch.softmax(logits, dim=-1)  # (B, N, M)
    expected = torch.einsum("bnm,cm->bcn", p, cells[0])  # (B, 2, N)
    err = (expected - truth.flatten(2).to(expected.dtype)).norm(dim=1)  # (B, N)
    weight = valid.flatten(1).to(err.dtype)
    return ((err * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)).mean()


def supervised_match_loss(logits: Tensor, truth: Tensor, valid: Tensor) -> Tensor:
    """Beyond the paper, the training form of the known correspondence: the negative log
    probability the warp gives the exemplar cell nearest to the truth,

        L_match = mean_b [ sum_u valid(u) * -log P(u, round(t(u))) / max(1, sum_u valid(u)) ]

    (cross-entropy over exemplar positions: every logit of the row gets a gradient, unlike the
    soft-argmax error of :func:`supervised_flow_loss`, which the sharp softmax of tau = 0.005
    leaves nearly flat). logits (B, N, M), truth (B, 2, hx, wx) exemplar cells, valid (B, hx, wx);
    both sides on one grid; truths are clamped to the grid.
    """
    check_tensor("supervised_match_loss", "truth", truth, 4, "(B, 2, hx, wx)")
    b, _, hx, wx = truth.shape
    hy, wy = _exemplar_grid(logits.shape[-1], hx, wx)
    col = truth[:, 0].round().clamp(0, wy - 1).long().flatten(1)
    row = truth[:, 1].round().clamp(0, hy - 1).long().flatten(1)
    target = row * wy + col  # (B, N)
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, N)
    weight = valid.flatten(1).to(nll.dtype)
    return ((nll * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)).mean()


def _exemplar_grid(m: int, hx: int, wx: int) -> tuple[int, int]:
    """The exemplar grid of M positions: the condition's (hx, wx) when M = hx*wx (training
    pairs share a grid); otherwise an error."""
    if m != hx * wx:
        raise ValueError(f"supervised flow / match loss: the exemplar has {m} positions but the condition grid is "
                         f"{hx} x {wx}; training pairs must share one latent grid")
    return hx, wx


# ---------------------------------------------------------------------------- image losses (VGG)

#: official feature-loss weights of relu1_2 ... relu5_2
FEATURE_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def feature_matching_loss(features: Sequence[Tensor], targets: Sequence[Tensor],
                          weights: Sequence[float] = FEATURE_WEIGHTS) -> Tensor:
    """L_feat = sum_i w_i mean|phi_i(a) - sg(phi_i(b))| over matching feature maps (official:
    VGG relu1_2 ... relu5_2, weights 1/32, 1/16, 1/8, 1/4, 1; the target side detached)."""
    if not (len(features) == len(targets) == len(weights)):
        raise ValueError(f"feature_matching_loss: {len(features)} features, {len(targets)} targets and "
                         f"{len(weights)} weights must be as many")
    return sum(w * F.l1_loss(a, b.detach()) for a, b, w in zip(features, targets, weights))


def contextual_loss(x: Tensor, y: Tensor, bandwidth: float = 0.1) -> Tensor:
    """Contextual loss (Mechrez et al. 2018) in the official MIDMs trainer's form
    (``ContextualLoss_forward`` with its PONO-style centring; CoCosNet centres by y's mean over
    positions instead):

        x, y centred by y's mean over channels at each position, n() over channels;
        d_ij = 1 - <x_i, y_j>;  d~_ij = d_ij / (min_k d_ik + 1e-3);
        A_ij = softmax_j((1 - d~_ij) / h);  CX = mean_i max_j A_ij;  L = mean_b -log(CX)

    x, y: (B, C, h, w) features (e.g. VGG of the warped exemplar and of the exemplar); h =
    ``bandwidth`` (official 0.1). The official code additionally drops rows whose best affinity
    is below 0.3 and those failing a forward-backward check; this is the loss without them.
    """
    check_tensor("contextual_loss", "x", x, 4, "(B, C, h, w)", finite=False)
    check_tensor("contextual_loss", "y", y, 4, "(B, C, h, w)", finite=False)
    centre = y.mean(dim=1, keepdim=True)
    xn = feature_normalize(x - centre).flatten(2)
    yn = feature_normalize(y - centre).flatten(2)
    d = 1 - torch.einsum("bci,bcj->bij", xn, yn)
    d_norm = d / (d.min(dim=-1, keepdim=True).values + 1e-3)
    affinity = torch.softmax((1 - d_norm) / bandwidth, dim=-1)
    cx = affinity.max(dim=-1).values.mean(dim=-1)
    return (-torch.log(cx)).mean()

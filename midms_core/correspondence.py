"""Cross-domain correspondence and soft warping (paper Eq. 5-6): the checked public functions.

Eq. 5: C(u, v) = <s_x(u) - mean_c s_x(u), s_y(v) - mean_c s_y(v)> / (|.| |.|), the cosine of
channel-centred features of condition position u and exemplar position v.
Eq. 6: R(u) = sum_v softmax_v(C(u, v) / tau) D_y(v).

Each function here validates its arguments once and hands them to the unchecked block kernel of
:mod:`midms_core.attention`, which streams over blocks of query rows: extra memory is about
``chunk_bytes`` plus the normalised features, linear in the number of positions, and the result
equals the dense definition up to float rounding. The softmax and the cosine always run in
float32 (with tau = 0.005 the logits are scaled by 200, so half precision would round away most
of the distribution) and results come back in the caller's dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .attention import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_TAU,
    ONE_PASS_MIN_CHANNELS,
    AttentionSettings,
    GridLocality,
    softmax_average,
    softmax_average_both_ways,
)
from .validation import broadcast_batch, check_tensor

__all__ = [
    "DEFAULT_CHUNK_BYTES", "DEFAULT_TAU", "ONE_PASS_MIN_CHANNELS", "AttentionSettings", "GridLocality",
    "attend", "attend_both_ways", "attend_dense", "centre_normalise", "check_feature_pair", "check_locality",
    "check_settings", "coordinate_grid", "correlation_logits", "flat_features", "flat_values", "soft_argmax_flow", "warp",
]
_NORM_EPS = 1e-6


def centre_normalise(features: Tensor) -> Tensor:
    """Channel-centred, channel-L2-normalised features, in float32 (Eq. 5's per-position vectors).

    features: (B, C, H, W) any float dtype -> (B, C, H, W) float32.
    A position whose centred vector is zero (e.g. a constant feature) gets a zero vector, so its
    cosine with everything is 0 rather than NaN.
    """
    f = features.float()
    f = f - f.mean(dim=1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)


def coordinate_grid(batch: int, height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel coordinates of a grid: (B, 2, H, W) with channel 0 = x (column), channel 1 = y (row)."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).unsqueeze(0).expand(batch, 2, height, width)


def check_feature_pair(
    where: str, query: Tensor, key: Tensor, values: Tensor, qname: str, kname: str, vname: str = "values"
) -> int:
    """Validate a query/key feature pair and values on the key grid; returns the common batch size.

    query: (Bq, C, Hq, Wq); key: (Bk, C, Hk, Wk); values: (Bv, Cv, Hk, Wk); finite, batch sizes
    equal or 1. Errors name ``where`` and the argument names given.
    """
    check_tensor(where, qname, query, 4, "(B, C, H, W)")
    check_tensor(where, kname, key, 4, "(B, C, H, W)")
    check_tensor(where, vname, values, 4, f"(B, Cv, H, W) on the grid of '{kname}'")
    if query.shape[1] != key.shape[1]:
        raise ValueError(
            f"{where}: '{qname}' and '{kname}' must have the same channel count C, "
            f"got {query.shape[1]} and {key.shape[1]}"
        )
    if values.shape[-2:] != key.shape[-2:]:
        raise ValueError(
            f"{where}: '{vname}' must lie on the grid of '{kname}' {tuple(key.shape[-2:])}, "
            f"got spatial size {tuple(values.shape[-2:])}"
        )
    return broadcast_batch(where, **{qname: query, kname: key, vname: values})


def check_locality(where: str, locality: Optional[GridLocality], query_features: Tensor, key_features: Tensor,
                   batch_of: dict) -> None:
    """Validate a :class:`GridLocality` against the pair (``batch_of``: the pair's named tensors,
    whose batch the term's must join)."""
    if locality is None:
        return
    if not isinstance(locality, GridLocality) or locality.points_on not in ("query", "key"):
        raise ValueError(f"{where}: 'locality' must be a GridLocality (points_on 'query' or 'key') or None, got {locality!r:.80}")
    points_side = query_features if locality.points_on == "query" else key_features
    h, w = points_side.shape[-2:]
    for name, t, channels in (("points", locality.points, 2), ("weight", locality.weight, 1)):
        check_tensor(where, f"locality.{name}", t, 4, f"(B, {channels}, {h}, {w}) on the {locality.points_on} grid")
        if t.shape[1] != channels or tuple(t.shape[-2:]) != (h, w):
            raise ValueError(f"{where}: 'locality.{name}' must be (B, {channels}, {h}, {w}) on the {locality.points_on} grid, "
                             f"got {tuple(t.shape)}")
    broadcast_batch(where, **batch_of, **{"locality.points": locality.points, "locality.weight": locality.weight})


def flat_features(features: Tensor, normalised: bool) -> Tensor:
    """(B, C, H, W) -> (B, C, N) float32, channel-centred and normalised unless it already is."""
    return (features.float() if normalised else centre_normalise(features)).flatten(2)


def flat_values(values: Tensor) -> Tensor:
    """(B, Cv, H, W) values -> (B, N, Cv) float32, the kernel's layout."""
    return values.float().flatten(2).transpose(1, 2)


def attend(
    query_features: Tensor,
    key_features: Tensor,
    values: Tensor,
    settings: AttentionSettings = AttentionSettings(),
    normalised: bool = False,
    locality: Optional[GridLocality] = None,
) -> Tensor:
    """Softmax-weighted average of ``values`` over key positions, for every query position.

    out(u) = sum_v softmax_v(C(u, v) / tau) values(v), C the channel-centred cosine (Eq. 5),
    clamped at 0 when ``settings.clamp_negative`` (the official code does this). This one kernel
    gives the warp (Eq. 6: queries = condition, keys = exemplar), the soft-argmax forward flow
    (values = exemplar coordinates) and the backward flow (queries and keys swapped).

    query_features: (Bq, C, Hq, Wq); key_features: (Bk, C, Hk, Wk); values: (Bv, Cv, Hk, Wk).
    Batch sizes must match or be 1. Returns (B, Cv, Hq, Wq) in ``values.dtype``.
    ``settings``: tau, clamp, block size and whether the fused kernel may be used
    (:class:`~midms_core.attention.AttentionSettings`).
    ``normalised=True`` skips :func:`centre_normalise` for features the caller already normalised.
    ``locality`` (:class:`GridLocality`) subtracts a squared-distance term from every logit after
    the clamp and the division by tau, e.g. a locality prior
    (:class:`midms_core.alignment.SpatialPrior`); it is part of each row's logits, so the blocked
    softmax stays exact. Its batch joins the others (1 broadcasts).
    Peak extra memory: about ``settings.chunk_bytes`` plus the float32 features and values.
    """
    return _attend_checked(("attend", "query_features", "key_features", "values"), query_features, key_features,
                           values, settings, normalised, locality)


def _attend_checked(names: tuple[str, str, str, str], query_features: Tensor, key_features: Tensor, values: Tensor,
                    settings: AttentionSettings, normalised: bool, locality: Optional[GridLocality]) -> Tensor:
    """:func:`attend` with the caller's names in its errors: validate once, then the kernel."""
    where, qname, kname, vname = names
    batch = check_feature_pair(where, query_features, key_features, values, qname, kname, vname)
    check_settings(where, settings)
    check_locality(where, locality, query_features, key_features,
                   {qname: query_features, kname: key_features, vname: values})
    out = softmax_average(flat_features(query_features, normalised), flat_features(key_features, normalised),
                          flat_values(values), tuple(key_features.shape[-2:]), settings, locality,
                          tuple(query_features.shape[-2:]))
    return out.view(out.shape[0], values.shape[1], *query_features.shape[-2:]).to(values.dtype)


def check_settings(where: str, settings: object) -> AttentionSettings:
    """``settings`` must be an :class:`AttentionSettings` (validated when it was made)."""
    if not isinstance(settings, AttentionSettings):
        raise ValueError(f"{where}: 'settings' must be an AttentionSettings(tau=..., clamp_negative=..., "
                         f"chunk_bytes=..., fused=...), got {type(settings).__name__}")
    return settings


def attend_both_ways(
    query_features: Tensor,
    key_features: Tensor,
    key_values: Tensor,
    query_values: Tensor,
    settings: AttentionSettings = AttentionSettings(),
    normalised: bool = False,
    locality: Optional[GridLocality] = None,
) -> tuple[Tensor, Tensor]:
    """:func:`attend` in both directions from ONE pass over the correlation blocks.

    forward  = attend(query, key, key_values):   (B, Cv, Hq, Wq), softmax over keys per query;
    backward = attend(key, query, query_values): (B, Cu, Hk, Wk), softmax over queries per key.

    The correlation is symmetric (C(u, v) of the backward direction is the forward C(v, u)), so
    each block of query rows is computed once (:func:`~midms_core.attention.softmax_average_both_ways`).
    Saves one N x N x C matmul for one extra exp over each block; worth it for wide features
    (:data:`ONE_PASS_MIN_CHANNELS`). Peak extra memory: about ``settings.chunk_bytes`` (two
    blocks of half the rows) plus the features. ``settings.fused`` does not apply here.

    query_features: (Bq, C, Hq, Wq); key_features: (Bk, C, Hk, Wk); key_values: (Bv, Cv, Hk, Wk);
    query_values: (Bu, Cu, Hq, Wq). Batch sizes must match or be 1. Results in float32.
    ``locality`` as in :func:`attend`, with its points on the query side (the keys' grid): one
    term shared by both directions.
    """
    where = "attend_both_ways"
    check_feature_pair(where, query_features, key_features, key_values, "query_features", "key_features", "key_values")
    check_feature_pair(where, key_features, query_features, query_values, "key_features", "query_features", "query_values")
    named = dict(query_features=query_features, key_features=key_features, key_values=key_values,
                 query_values=query_values)
    broadcast_batch(where, **named)
    check_settings(where, settings)
    check_locality(where, locality, query_features, key_features, named)
    if locality is not None and locality.points_on != "query":
        raise ValueError(f"{where}: 'locality' must have its points on the query side (points_on 'query')")
    forward, backward = softmax_average_both_ways(
        flat_features(query_features, normalised), flat_features(key_features, normalised),
        flat_values(key_values), flat_values(query_values), tuple(key_features.shape[-2:]), settings, locality)
    batch = forward.shape[0]
    forward = forward.transpose(1, 2).reshape(batch, key_values.shape[1], *query_features.shape[-2:])
    backward = backward.transpose(1, 2).reshape(batch, query_values.shape[1], *key_features.shape[-2:])
    return forward, backward


def attend_dense(
    query_features: Tensor,
    key_features: Tensor,
    values: Tensor,
    settings: AttentionSettings = AttentionSettings(),
    locality: Optional[GridLocality] = None,
) -> Tensor:
    """The same as :func:`attend` with the whole (Nq x Nk) matrix built at once, as the official
    code does (``settings.chunk_bytes`` and ``settings.fused`` do not apply). Kept as the memory
    baseline for benchmarks; prefer :func:`attend`."""
    where = "attend_dense"
    check_feature_pair(where, query_features, key_features, values, "query_features", "key_features")
    check_settings(where, settings)
    check_locality(where, locality, query_features, key_features, {"query_features": query_features})
    logits = correlation_logits(query_features, key_features, settings.tau, settings.clamp_negative)
    if locality is not None:
        grid = tuple((key_features if locality.points_on == "query" else query_features).shape[-2:])
        points = locality.points.float().flatten(2)  # (B, 2, N)
        cells = coordinate_grid(1, *grid, device=points.device).flatten(2)  # (1, 2, G)
        d2 = (points.unsqueeze(3) - cells.unsqueeze(2)).square().sum(1)  # (B, N, G)
        d2 = d2 * locality.weight.float().flatten(2).transpose(1, 2)
        logits = logits - (d2 if locality.points_on == "query" else d2.transpose(1, 2))
    weights = torch.softmax(logits, dim=-1)
    out = torch.einsum("bnm,bcm->bcn", weights, values.float().flatten(2))
    return out.reshape(out.shape[0], out.shape[1], *query_features.shape[-2:]).to(values.dtype)


def correlation_logits(query_features: Tensor, key_features: Tensor, tau: float = DEFAULT_TAU,
                       clamp_negative: bool = True) -> Tensor:
    """The whole logit matrix at once, differentiable (training): (B, C, Hq, Wq), (B, C, Hk, Wk)
    -> (B, Nq, Nk) float32 (float64 for float64 input), L(u, v) = max(0, <c(q_u), c(k_v)>) / tau with c = centre_normalise
    (Eq. 5; without the clamp when ``clamp_negative`` is False). float64 features stay float64."""
    def centred(f: Tensor) -> Tensor:
        f = f.to(torch.promote_types(f.dtype, torch.float32))
        f = f - f.mean(dim=1, keepdim=True)
        return (f / f.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)).flatten(2)

    q, k = centred(query_features), centred(key_features)
    corr = torch.einsum("bcn,bcm->bnm", q, k)
    return (corr.clamp(min=0.0) if clamp_negative else corr) / tau


def warp(
    condition_features: Tensor,
    exemplar_features: Tensor,
    exemplar_values: Tensor,
    settings: AttentionSettings = AttentionSettings(),
    locality: Optional[GridLocality] = None,
) -> Tensor:
    """Warp any exemplar tensor onto the condition grid (Eq. 6).

    condition_features: (B, C, Hx, Wx) S_x; exemplar_features: (B, C, Hy, Wy) S_y;
    exemplar_values: (B, Cv, Hy, Wy) latent, image, mask or coordinates on the exemplar grid.
    Returns (B, Cv, Hx, Wx) in ``exemplar_values.dtype``. ``settings``, ``locality``: as in :func:`attend`.
    """
    return _attend_checked(("warp", "condition_features", "exemplar_features", "exemplar_values"),
                           condition_features, exemplar_features, exemplar_values, settings, False, locality)


def soft_argmax_flow(
    query_features: Tensor,
    key_features: Tensor,
    settings: AttentionSettings = AttentionSettings(),
    locality: Optional[GridLocality] = None,
) -> Tensor:
    """Soft-argmax map from the query grid into the key grid, in key-grid pixel coordinates.

    (Bq, C, Hq, Wq), (Bk, C, Hk, Wk) -> (B, 2, Hq, Wq): channel 0 = x, channel 1 = y of the
    expected matching key position. Condition -> exemplar is the forward flow; swap the
    arguments for the backward flow. Returned in float32.
    """
    check_tensor("soft_argmax_flow", "key_features", key_features, 4, "(B, C, H, W)")
    grid = coordinate_grid(1, key_features.shape[-2], key_features.shape[-1], key_features.device)
    return _attend_checked(("soft_argmax_flow", "query_features", "key_features", "coordinates"),
                           query_features, key_features, grid, settings, False, locality)

"""Several exemplars matched as ONE union.

Every condition position u is matched against the positions of all G exemplars at once, one
softmax over all of them (Eq. 6 with the keys of every exemplar), so each position takes its
best source. The exemplars (one size, as an IMAGE batch has) are stacked top to bottom into one
grid of G * Hy rows; flows are in that stacked grid (:func:`split_stacked` turns a position into
(exemplar, position in it)), the backward flow of the cycle check runs from every exemplar
position over the condition, and :class:`~midms_core.confidence.WarpResult` ``source`` gives
each exemplar's share of a position's weight. A restriction
(:mod:`midms_core.exemplars.regions`) may limit which pairs match.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..alignment import SpatialPrior
from ..attention import AttentionSettings, PairRestriction
from ..confidence import ConfidenceSettings, WarpResult, check_confidence, prepare_exemplar, warp_prepared
from ..correspondence import check_settings
from ..matchers.base import Matcher, MatchFeatures, MatchSide, Restriction
from ..validation import broadcast_batch, check_tensor
from .regions import pair_restriction


def stack_exemplars(where: str, name: str, tensors: Sequence[Tensor]) -> Tensor:
    """G tensors (B, C, Hy, Wy) of one shape -> (B, C, G * Hy, Wy), the exemplars top to bottom."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"{where}: '{name}' must be a non-empty list of (B, C, H, W) tensors, one per exemplar")
    for i, t in enumerate(tensors):
        check_tensor(where, f"{name}[{i}]", t, 4, "(B, C, H, W)")
        if t.shape[1:] != tensors[0].shape[1:]:
            raise ValueError(f"{where}: every exemplar must have the shape of the first (C, H, W) = "
                             f"{tuple(tensors[0].shape[1:])}; '{name}[{i}]' has {tuple(t.shape[1:])}. "
                             "Fit the exemplar images to one size first")
    batch = broadcast_batch(where, **{f"{name}[{i}]": t for i, t in enumerate(tensors)})
    return torch.cat([t.expand(batch, -1, -1, -1) for t in tensors], dim=2)


def split_stacked(flow: Tensor, height: int) -> tuple[Tensor, Tensor]:
    """Positions (x, y) in the stacked grid -> (exemplar index (B, 1, H, W) long, (x, y) inside
    that exemplar (B, 2, H, W)). flow: (B, 2, H, W); height: one exemplar's rows."""
    index = (flow[:, 1:2].round().clamp(min=0) // height).long()
    return index, torch.cat([flow[:, :1], flow[:, 1:2] - index * height], dim=1)


def union_prior(priors: Sequence[Optional[SpatialPrior]]) -> Optional[SpatialPrior]:
    """One :class:`SpatialPrior` per exemplar -> one over the union (target (B, 2G, Hx, Wx), each
    exemplar's target in its own cells), or None when none has one. All or none: a union where
    only some exemplars are located would favour them."""
    given = [p is not None for p in priors]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("union_prior: either every exemplar has a locality prior or none has "
                         f"(got one for exemplars {[i for i, g in enumerate(given) if g]} of {len(priors)})")
    batch = max(p.target.shape[0] for p in priors)
    grid = priors[0].target.shape[-2:]
    targets, sigmas = [], []
    for p in priors:
        target = p.target.float().expand(batch, -1, -1, -1)
        targets.append(target)
        sigma = p.sigma if isinstance(p.sigma, Tensor) else target.new_full((1, 1, *grid), float(p.sigma))
        sigmas.append(sigma.float().to(target.device).expand(batch, -1, -1, -1))
    return SpatialPrior(torch.cat(targets, dim=1), torch.cat(sigmas, dim=1))


def warp_union_with_confidence(
    condition_features: Tensor,
    exemplar_features: Sequence[Tensor],
    exemplar_values: Sequence[Tensor],
    settings: AttentionSettings = AttentionSettings(),
    confidence: ConfidenceSettings = ConfidenceSettings(),
    priors: Optional[Sequence[Optional[SpatialPrior]]] = None,
    restriction: Optional[Restriction] = None,
) -> WarpResult:
    """:func:`~midms_core.confidence.warp_with_confidence` against the union of G exemplars.

    condition_features: (B, C, Hx, Wx); exemplar_features: G tensors (B, C, Hy, Wy);
    exemplar_values: G tensors (B, Cv, Hy, Wy); ``priors``: one SpatialPrior (or None) per
    exemplar, each on the condition grid into its exemplar's cells; ``settings`` and
    ``confidence`` as there; ``restriction``: which pairs may match (:class:`Restriction`).
    Results as :class:`~midms_core.confidence.WarpResult`, with the flows in the stacked grid
    (Hy -> G * Hy) and ``source`` (B, G, Hx, Wx) when G > 1. With G = 1 and no restriction this equals warp_with_confidence.
    """
    where = "warp_union_with_confidence"
    features = stack_exemplars(where, "exemplar_features", exemplar_features)
    values = stack_exemplars(where, "exemplar_values", exemplar_values)
    groups = len(exemplar_features)
    if len(exemplar_values) != groups or (priors is not None and len(priors) != groups):
        raise ValueError(f"{where}: give one entry per exemplar: {groups} feature maps, {len(exemplar_values)} values"
                         + ("" if priors is None else f", {len(priors)} priors"))
    prior = None if priors is None else union_prior(priors)
    return warp_stacked_with_confidence(condition_features, features, values, groups, settings, confidence, prior,
                                        restriction, where)


def warp_stacked_with_confidence(
    condition_features: Tensor,
    exemplar_features: Tensor,
    exemplar_values: Tensor,
    groups: int,
    settings: AttentionSettings = AttentionSettings(),
    confidence: ConfidenceSettings = ConfidenceSettings(),
    prior: Optional[SpatialPrior] = None,
    restriction: Optional[Restriction] = None,
    where: str = "warp_stacked_with_confidence",
) -> WarpResult:
    """:func:`warp_union_with_confidence` on exemplars already stacked: exemplar_features
    (B, C, G * Hy, Wy), exemplar_values (B, Cv, G * Hy, Wy), ``prior`` over the union
    (:func:`union_prior`) or None."""
    check_settings(where, settings)
    check_confidence(where, confidence)
    pairs = prepare_union(where, condition_features, exemplar_features, groups, prior, restriction)
    exemplar = prepare_exemplar(where, condition_features, exemplar_features, exemplar_values, prior, groups, pairs)
    return warp_prepared(condition_features, exemplar, settings, confidence)


def prepare_union(where: str, condition_features: Tensor, exemplar_features: Tensor, groups: int,
                  prior: Optional[SpatialPrior], restriction: Optional[Restriction]) -> Optional[PairRestriction]:
    """Check the union's shape, prior and restriction once; the kernel's restriction (or None)."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or exemplar_features.dim() != 4 \
            or exemplar_features.shape[-2] % groups:
        raise ValueError(f"{where}: 'groups' must be a whole number >= 1 that divides the stacked exemplar height, "
                         f"got {groups!r} for shape {tuple(exemplar_features.shape)}")
    if prior is not None and isinstance(prior, SpatialPrior) and prior.groups != groups:
        raise ValueError(f"{where}: the prior has targets for {prior.groups} exemplar(s), the union has {groups}")
    if restriction is None:
        return None
    one_grid = (exemplar_features.shape[-2] // groups, exemplar_features.shape[-1])
    pairs = pair_restriction(where, restriction, groups, tuple(condition_features.shape[-2:]), one_grid)
    tensors = {f"restriction.{k}": v for k, v in vars(restriction).items() if v is not None}
    broadcast_batch(where, condition_features=condition_features, exemplar_features=exemplar_features, **tensors)
    return pairs._replace(exemplar_group=pairs.exemplar_group.to(condition_features.device))


def bind_union(matcher: Matcher, condition: MatchSide, exemplars: Sequence[MatchSide],
               restriction: Optional[Restriction] = None) -> MatchFeatures:
    """Features of a condition against G exemplars as one union, from any matcher whose condition
    features do not depend on the exemplar (every matcher here: the condition side and the x0_hat
    features are computed from the condition alone; they are taken from the first pair).
    ``Matcher.bind_each`` computes the condition side once for all G pairs.

    The exemplar maps are stacked (:func:`stack_exemplars`), the priors united
    (:func:`union_prior`); the result carries ``groups`` and ``restriction`` for every warp of
    the run (first match and re-matches alike).
    """
    if not isinstance(exemplars, (list, tuple)) or not exemplars:
        raise ValueError("bind_union: 'exemplars' must be a non-empty list of MatchSides")
    return unite(matcher.bind_each(condition, list(exemplars)), restriction)


def unite(bound: Sequence[MatchFeatures], restriction: Optional[Restriction] = None) -> MatchFeatures:
    """G pairs' features of one condition (``Matcher.bind_each``) -> their union: the exemplar
    maps stacked, the priors united, ``groups`` and ``restriction`` set."""
    where = "bind_union"
    first = bound[0]
    return dataclasses.replace(
        first,
        exemplar=stack_exemplars(where, "exemplar features", [b.exemplar for b in bound]),
        exemplar_in_domain=stack_exemplars(where, "in-domain exemplar features", [b.exemplar_in_domain for b in bound]),
        prior=union_prior([b.prior for b in bound]),
        alignment=None,
        groups=len(bound),
        restriction=restriction,
    )

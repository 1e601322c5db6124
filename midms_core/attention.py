"""The block kernel under the correspondence: a softmax over correlation logits, streamed.

out(u) = sum_v softmax_v(L(u, v)) values(v), L(u, v) = max(0, <q_u, k_v>) / tau - l(u, v) with
q, k centre-normalised features (Eq. 5; the clamp when ``clamp_negative``) and l an optional
locality term (:class:`GridLocality`). The (Nq x Nk) matrix is never built whole: blocks of query
rows are computed one at a time, so extra memory is about ``chunk_bytes`` plus the features.
Each row's softmax needs only its row, so the result equals the dense definition up to rounding.

This module does NOT check its arguments: it is the inner loop, called many times per sampler
run on tensors its callers validated once (:mod:`midms_core.correspondence`,
:mod:`midms_core.confidence`, the sampler's set-up). Everything here takes features that are
already centre-normalised float32 and flattened: (B, C, N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .cancellation import checkpoint
from .validation import check_positive

__all__ = [  # the kernel; its building blocks (exact_rows, locality_tables, ...) stay importable for tests
    "DEFAULT_CHUNK_BYTES", "DEFAULT_TAU", "FUSED_CERTIFICATE_EPS", "ONE_PASS_MIN_CHANNELS", "AttentionSettings",
    "GridLocality", "softmax_average", "softmax_average_both_ways",
]

DEFAULT_TAU = 0.005  # official MIDMs code (CoCosNet used 0.01)
DEFAULT_CHUNK_BYTES = 64 * 2**20  # one block of logits; 64 MiB keeps a 256x256 latent fast and lean

# A row's clamped and unclamped softmax averages differ by at most Nk exp(-m / tau) times the
# values' range, m = the row's best cosine (proof in _fused_rows). Below 2^-24 that is under
# float32's resolution of the values.
FUSED_CERTIFICATE_EPS = 2.0**-24


@dataclass(frozen=True)
class AttentionSettings:
    """How the correlation softmax is evaluated; validated once, here.

    tau:            softmax temperature (official 0.005).
    clamp_negative: clamp correlations at 0 before the division by tau (the official code does).
    chunk_bytes:    memory budget for one block of float32 logits.
    fused:          use the host's fused attention kernel where it provably equals the clamped
                    definition (:func:`_fused_rows`), the exact block loop elsewhere.
    """

    tau: float = DEFAULT_TAU
    clamp_negative: bool = True
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    fused: bool = True

    def __post_init__(self) -> None:
        where = "AttentionSettings"
        object.__setattr__(self, "tau", check_positive(where, "tau", self.tau))
        object.__setattr__(self, "chunk_bytes", int(check_positive(where, "chunk_bytes", self.chunk_bytes)))
        for name in ("clamp_negative", "fused"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{where}: '{name}' must be True or False, got {getattr(self, name)!r}")


class GridLocality(NamedTuple):
    """A locality term of the logits between positions p of one side, each with a point and a
    weight, and the cells g = (x, y) of the other side's grid: -w(p) |point(p) - g|^2, added
    after the clamp and the division by tau.

    points: (B, 2, H, W) (x, y) in the grid side's cell coordinates; weight: (B, 1, H, W) > 0;
    points_on: "query" (the grid is the keys' grid; e.g. the forward warp with a prior around
    T(u)) or "key" (the grid is the queries' grid; the backward direction of the same term).

    Several grids stacked top to bottom (G exemplars of one size, matched as one union):
    points (B, 2G, H, W) = (x_0, y_0, x_1, y_1, ...) and weight (B, G, H, W), one point and weight
    per grid, each in its own grid's cells; the term of a cell g of grid k is -w_k |point_k - g|^2.

    The squared distance separates, |p - g|^2 = (p_x - x)^2 + (p_y - y)^2, so each block of
    logits viewed on the grid takes two broadcast subtractions of small tables: exact (every
    difference computed directly, no expansion that cancels, no matmul that TF32 could round),
    no temporary of block size, and the softmax stays row-exact.
    """

    points: Tensor
    weight: Tensor
    points_on: str = "query"

    def swapped(self) -> "GridLocality":
        """The same term with queries and keys exchanged (the backward direction)."""
        return GridLocality(self.points, self.weight, "key" if self.points_on == "query" else "query")

    @property
    def groups(self) -> int:
        """How many stacked grids the term spans (1: one grid)."""
        return int(self.weight.shape[1])


class _Locality(NamedTuple):
    """A :class:`GridLocality` prepared for one item: its per-axis tables on the grid side, and
    the grid of ONE of its stacked grids."""

    tables: tuple[Tensor, Tensor]
    points_on: str
    grid: tuple[int, int]


class PairRestriction(NamedTuple):
    """Which (condition u, exemplar v) pairs may match at all; the others get no weight (their
    logits are -inf inside the softmax, not a blend afterwards).

    allowed(u, v) = condition_allowed[group(v), u] and exemplar_allowed[v]
                    and condition_label[u] == exemplar_label[v]
    for every factor that is given (None: no restriction from it).

    exemplar_group:    (Ne,) long, which exemplar (stacked grid) each exemplar position is in;
    condition_allowed: (B, G, Nc) bool, the condition positions each exemplar may serve;
    exemplar_allowed:  (B, Ne) bool, the exemplar positions that may be used at all;
    condition_label, exemplar_label: (B, Nc), (B, Ne) long label indices (equal labels match);
    condition_is_query: True when the queries are condition positions (the forward direction),
                        False for the backward direction (:meth:`swapped`).
    A row with no allowed key has no source: the kernel returns NaN for it (callers report such
    positions as not confident).
    """

    exemplar_group: Tensor
    condition_allowed: Optional[Tensor] = None
    exemplar_allowed: Optional[Tensor] = None
    condition_label: Optional[Tensor] = None
    exemplar_label: Optional[Tensor] = None
    condition_is_query: bool = True

    def swapped(self) -> "PairRestriction":
        """The same relation with queries and keys exchanged."""
        return self._replace(condition_is_query=not self.condition_is_query)


def allowed_block(restriction: PairRestriction, b: int, start: int, rows: int, n_key: int) -> Tensor:
    """allowed(u, v) for query rows start:start + rows of item b against all keys: (rows, Nk) bool."""
    r = restriction
    block = slice(start, start + rows)
    allowed = torch.ones((), dtype=torch.bool, device=r.exemplar_group.device)
    if r.condition_is_query:  # rows: condition positions; keys: exemplar positions
        if r.condition_allowed is not None:
            allowed = item(r.condition_allowed, b)[:, block][r.exemplar_group].transpose(0, 1)  # (rows, Ne)
        if r.exemplar_allowed is not None:
            allowed = allowed & item(r.exemplar_allowed, b)[None, :]
        if r.condition_label is not None:
            allowed = allowed & (item(r.condition_label, b)[block, None] == item(r.exemplar_label, b)[None, :])
    else:  # rows: exemplar positions; keys: condition positions
        if r.condition_allowed is not None:
            allowed = item(r.condition_allowed, b)[r.exemplar_group[block]]  # (rows, Nc)
        if r.exemplar_allowed is not None:
            allowed = allowed & item(r.exemplar_allowed, b)[block, None]
        if r.condition_label is not None:
            allowed = allowed & (item(r.exemplar_label, b)[block, None] == item(r.condition_label, b)[None, :])
    return allowed.expand(rows, n_key)


def rows_per_chunk(key_count: int, chunk_bytes: int) -> int:
    """How many query rows of float32 logits against ``key_count`` keys fit in ``chunk_bytes``."""
    return max(1, int(chunk_bytes) // (4 * key_count))


def item(batch: Tensor, b: int) -> Tensor:
    """Item ``b`` of a batch that may broadcast (size 1)."""
    return batch[b if batch.shape[0] > 1 else 0]


def locality_tables(locality: GridLocality, grid: tuple[int, int], b: int) -> tuple[Tensor, Tensor]:
    """Per-axis tables of item b: X = w (p_x - x)^2 and Y = w (p_y - y)^2 for the N point
    positions against the gw columns and gh rows of each of the G stacked grids (``grid`` =
    (gh, gw) of one), float32, laid out as the blocks read them: (N, G, gw), (N, G, gh) for points
    on the query side, (G, gw, N), (G, gh, N) for points on the key side."""
    gh, gw = grid
    points = item(locality.points, b).float().flatten(1)  # (2G, N)
    weight = item(locality.weight, b).float().flatten(1)  # (G, N)
    px, py = points[0::2], points[1::2]  # (G, N)
    xs = torch.arange(gw, device=points.device, dtype=torch.float32)
    ys = torch.arange(gh, device=points.device, dtype=torch.float32)
    if locality.points_on == "query":
        return ((px[:, :, None] - xs[None, None, :]).square_().mul_(weight[:, :, None]).transpose(0, 1),
                (py[:, :, None] - ys[None, None, :]).square_().mul_(weight[:, :, None]).transpose(0, 1))
    return ((xs[None, :, None] - px[:, None, :]).square_().mul_(weight[:, None, :]),
            (ys[None, :, None] - py[:, None, :]).square_().mul_(weight[:, None, :]))


def subtract_locality(logits: Tensor, tables: tuple[Tensor, Tensor], points_on: str, grid: tuple[int, int],
                      start: int) -> None:
    """logits (r, Nk) for query rows start:start + r -= the locality term.

    points_on "query": the keys are the G stacked grids of (gh, gw) = ``grid``; tables (Nq, G, gw),
    (Nq, G, gh) of the points.
    points_on "key": the queries are the stacked grids and the block holds whole grid rows
    (start and r multiples of gw); tables (G, gw, Nk), (G, gh, Nk).
    """
    table_x, table_y = tables
    gh, gw = grid
    r = logits.shape[0]
    if points_on == "query":
        view = logits.view(r, table_x.shape[1], gh, gw)
        view.sub_(table_y[start : start + r, :, :, None]).sub_(table_x[start : start + r, :, None, :])
        return
    view = logits.view(r // gw, gw, -1)
    row0, n_rows = start // gw, r // gw
    for g in range(row0 // gh, (row0 + n_rows - 1) // gh + 1):  # the stacked grids the block spans
        first, stop = max(row0, g * gh), min(row0 + n_rows, (g + 1) * gh)
        view[first - row0 : stop - row0].sub_(table_x[g][None]).sub_(table_y[g, first - g * gh : stop - g * gh, None, :])


def _prepared(locality: Optional[GridLocality], grid: Optional[tuple[int, int]], b: int) -> Optional[_Locality]:
    """The locality term of item b; ``grid`` is the (stacked) grid side's whole grid."""
    if locality is None:
        return None
    one = (grid[0] // locality.groups, grid[1])
    return _Locality(locality_tables(locality, one, b), locality.points_on, one)


def _softmax_rows(logits: Tensor, vb: Tensor) -> Tensor:
    """In place: the stable softmax of each row of ``logits`` (r, Nk) applied to ``vb`` (Nk, Cv):
    (r, Cv), rounded exactly as torch.softmax(L) rounds; the small (r, Cv) product is normalised
    instead of the (r, Nk) block. A row whose logits are all -inf (no allowed key) gives NaN."""
    top = logits.amax(dim=1, keepdim=True)
    logits.sub_(top.masked_fill_(top == -float("inf"), 0.0)).exp_()
    return (logits @ vb) / logits.sum(dim=1, keepdim=True)


def softmax_average(q: Tensor, k: Tensor, v: Tensor, key_grid: tuple[int, int], settings: AttentionSettings,
                    locality: Optional[GridLocality] = None, query_grid: Optional[tuple[int, int]] = None,
                    restriction: Optional[PairRestriction] = None) -> Tensor:
    """The kernel of :func:`midms_core.correspondence.attend`, unchecked.

    q: (Bq, C, Nq), k: (Bk, C, Nk) centre-normalised float32; v: (Bv, Nk, Cv) float32; batch
    sizes equal or 1. key_grid = (Hk, Wk) with Hk * Wk = Nk (several grids: stacked top to
    bottom); ``query_grid`` (Hq, Wq) is needed only for a locality term whose points are on the
    key side. ``restriction``: the pairs that may match (:class:`PairRestriction`); rows with no
    allowed key are NaN. Returns (B, Cv, Nq) float32.
    """
    batch = max(q.shape[0], k.shape[0], v.shape[0])
    n_query, n_key = q.shape[-1], k.shape[-1]
    # a restriction adds a mask block (float for the fused kernel) and its boolean factors beside
    # the logits block: half the rows keep the peak near the same budget
    rows = rows_per_chunk(n_key, settings.chunk_bytes // (1 if restriction is None else 2))
    grid = None
    if locality is not None:
        batch = max(batch, locality.points.shape[0], locality.weight.shape[0])
        grid = tuple(key_grid) if locality.points_on == "query" else tuple(query_grid)
        if locality.points_on == "key":
            rows = max(rows // grid[1], 1) * grid[1]  # whole rows of the query grid

    out = v.new_empty((batch, v.shape[-1], n_query))
    for b in range(batch):
        qb, kb, vb = item(q, b).transpose(0, 1), item(k, b), item(v, b)  # (Nq, C), (C, Nk), (Nk, Cv)
        prepared = _prepared(locality, grid, b)
        allowed = None if restriction is None else (lambda start, r, b=b: allowed_block(restriction, b, start, r, n_key))
        if settings.fused:
            out[b] = _fused_rows(qb, kb, vb, settings.tau, settings.clamp_negative, rows, key_grid, prepared,
                                 allowed).transpose(0, 1)
            continue
        for start in range(0, n_query, rows):
            checkpoint()  # a host's interrupt, between blocks
            r = min(rows, n_query - start)
            block = exact_rows(qb[start : start + rows], kb, vb, settings.tau, settings.clamp_negative,
                               prepared, start, None if allowed is None else allowed(start, r))
            out[b, :, start : start + rows] = block.transpose(0, 1)
    return out


def exact_rows(q_rows: Tensor, kb: Tensor, vb: Tensor, tau: float, clamp_negative: bool,
               locality: Optional[_Locality] = None, start: int = 0, allowed: Optional[Tensor] = None) -> Tensor:
    """The definition, for a block of query rows start:start + r: (r, C) against keys (C, Nk)
    and values (Nk, Cv) -> (r, Cv) float32 (:func:`_softmax_rows`). ``allowed`` (r, Nk) bool:
    the pairs that may match; a row with none is NaN."""
    logits = q_rows @ kb  # (r, Nk)
    if clamp_negative:
        logits.clamp_(min=0.0)
    logits.div_(tau)
    if locality is not None:
        subtract_locality(logits, *locality, start)
    if allowed is not None:
        logits.masked_fill_(~allowed, -float("inf"))
    return _softmax_rows(logits, vb)


def _fused_rows(qb: Tensor, kb: Tensor, vb: Tensor, tau: float, clamp_negative: bool, rows: int,
                key_grid, locality: Optional[_Locality] = None, allowed=None) -> Tensor:
    """:func:`softmax_average` for one item through the host's fused attention kernel
    (``scaled_dot_product_attention``: no (r, Nk) block of logits in memory on kernels that fuse),
    exact with respect to the clamped definition within float32 resolution.

    The kernel computes the UNCLAMPED softmax. For a row u with best cosine m >= 0, unclamped
    weights a_v = exp(c_v / tau) and clamped ones b_v = exp(max(c_v, 0) / tau) differ only where
    c_v < 0, by d_v = 1 - a_v in [0, 1); with D = sum d_v <= Nk and Z_b = sum b_v >= exp(m / tau),
    the clamped average is (Z_a out_a + D y) / Z_b (y an average of the values), so
    |out_b - out_a| <= D / Z_b * range(values) <= Nk exp(-m / tau) * range(values).
    m is bounded from below by c(u, v') for cells v' near the row's soft-argmax position (read
    from two extra value channels: the key coordinates), the best of a 3 x 3 neighbourhood. Rows
    where Nk exp(-c(u, v') / tau) > 2^-24 are recomputed by the exact loop (:func:`exact_rows`).

    With a locality term the kernel gets it as an additive mask, block by block (the mask block
    is the size of the loop's logits block, made by the same exact subtractions): logits
    c / tau - l(u, v), l >= 0. The clamp then adds at most exp(-l_v) per key, so D <= L(u) =
    sum_v exp(-l(u, v)) (<= Nk), and the row's total is at least exp(c(u, v') / tau - l(u, v'))
    for any v': the bound holds with Nk replaced by L(u) (the logsumexp of the mask's row) and
    m / tau by the best c(u, v') / tau - l(u, v') of the 3 x 3 cells. A sharp prior (semantic
    anchors: sigma a fraction of a cell) makes every l large, and L(u) with it small; bounding D
    by Nk instead would send most of its rows to the exact loop.

    A restriction (``allowed(start, r)`` -> (r, Nk) bool) joins the mask as -inf: excluded keys
    weigh 0 with and without the clamp, so the bound holds over the allowed keys, and the 3 x 3
    cells' best is taken over allowed cells only (a row whose cells are all excluded, or that
    has no allowed key at all, falls back to the exact loop, which returns NaN for the latter).
    Any key's logit is a valid lower bound of its row's largest, so the choice of cells only
    decides how many rows fall back, never the result.

    qb: (Nq, C); kb: (C, Nk); vb: (Nk, Cv); key_grid: (Hk, Wk). Returns (Nq, Cv) float32.
    """
    n_query, n_key = qb.shape[0], kb.shape[1]
    keys = kb.transpose(0, 1).contiguous()  # (Nk, C)
    hk, wk = int(key_grid[0]), int(key_grid[1])
    augmented = vb
    if clamp_negative:  # two more value channels, the key's cell: the row's soft-argmax position
        ys, xs = torch.meshgrid(torch.arange(hk, device=vb.device, dtype=torch.float32),
                                torch.arange(wk, device=vb.device, dtype=torch.float32), indexing="ij")
        cells = torch.stack([xs.flatten(), ys.flatten()], dim=1)  # (Nk, 2): x, y
        augmented = torch.cat([vb, cells], dim=1)
    out = vb.new_empty((n_query, vb.shape[1]))
    for start in range(0, n_query, rows):
        checkpoint()  # a host's interrupt, between blocks
        q_rows = qb[start : start + rows]
        mask = _block_mask(q_rows, n_key, start, locality, allowed)
        fused = F.scaled_dot_product_attention(q_rows[None, None], keys[None, None], augmented[None, None],
                                               attn_mask=None if mask is None else mask[None, None],
                                               scale=1.0 / tau)[0, 0]  # (r, Cv [+ 2])
        out[start : start + rows] = fused[:, : vb.shape[1]]
        if not clamp_negative:
            continue
        unsafe = _uncertified_rows(q_rows, keys, fused[:, vb.shape[1]:], hk, wk, tau, mask)
        if unsafe.numel():
            out[start + unsafe] = exact_rows_subset(q_rows, unsafe, kb, vb, tau, mask)
    return out


def _block_mask(q_rows: Tensor, n_key: int, start: int, locality: Optional[_Locality], allowed) -> Optional[Tensor]:
    """The fused kernel's additive mask for query rows start:start + r, (r, Nk): -l(u, v) exactly
    as the loop subtracts it, -inf where ``allowed`` excludes the pair; None without either."""
    if locality is None and allowed is None:
        return None
    mask = q_rows.new_zeros((q_rows.shape[0], n_key))
    if locality is not None:
        subtract_locality(mask, *locality, start)  # -l(u, v), exactly as the loop
    if allowed is not None:
        mask.masked_fill_(~allowed(start, q_rows.shape[0]), -float("inf"))
    return mask


def exact_rows_subset(q_rows: Tensor, unsafe: Tensor, kb: Tensor, vb: Tensor, tau: float,
                      mask: Optional[Tensor]) -> Tensor:
    """The clamped definition for the rows ``unsafe`` of a block, with the block's locality mask
    (-l(u, v), (r, Nk)) when there is one."""
    logits = (q_rows[unsafe] @ kb).clamp_(min=0.0).div_(tau)
    if mask is not None:
        logits.add_(mask[unsafe])
    return _softmax_rows(logits, vb)


def _uncertified_rows(q_rows: Tensor, keys: Tensor, position: Tensor, hk: int, wk: int, tau: float,
                      mask: Optional[Tensor]) -> Tensor:
    """The rows of a block the certificate of :func:`_fused_rows` does not cover: (k,) indices.
    A row's largest logit is at least the best unclamped logit c(u, v') / tau (+ the mask's
    -l(u, v')) of the 3 x 3 key cells v' around its (x, y) soft-argmax ``position`` (each is one
    of the row's logits); the row fails when that is below log Nk + log(1 / eps), or with a mask
    below the row's own bound log L(u) + log(1 / eps), or is -inf (a row whose nearby cells or
    whose keys are all excluded always goes to the exact loop)."""
    position = position.nan_to_num(0.0)  # a row with no allowed key averages nothing
    x = position[:, 0].round().clamp(0, wk - 1).long()
    y = position[:, 1].round().clamp(0, hk - 1).long()
    rows = torch.arange(q_rows.shape[0], device=q_rows.device)
    best = q_rows.new_full((q_rows.shape[0],), -float("inf"))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            index = (y + dy).clamp(0, hk - 1) * wk + (x + dx).clamp(0, wk - 1)
            logit = (q_rows * keys[index]).sum(dim=1) / tau
            if mask is not None:
                logit = logit + mask[rows, index]
            best = torch.maximum(best, logit)
    if mask is None:
        return torch.nonzero(best < math.log(keys.shape[0]) + math.log(1 / FUSED_CERTIFICATE_EPS)).flatten()
    row_threshold = torch.logsumexp(mask, dim=1) + math.log(1 / FUSED_CERTIFICATE_EPS)
    return torch.nonzero((best < row_threshold) | (best == -float("inf"))).flatten()


# From this feature width on, one pass over the correlation for both directions is faster than
# two (2 CPU cores, 128 x 128 latents, A/B in one process: 1164 channels 0.67x the time of two
# passes, 640 channels 0.81x, 256 channels 1.07x: the extra exp pass outweighs the saved matmul).
# Measured before the fused kernel; not measured on a GPU.
ONE_PASS_MIN_CHANNELS = 512


def softmax_average_both_ways(q: Tensor, k: Tensor, key_values: Tensor, query_values: Tensor,
                              key_grid: tuple[int, int], settings: AttentionSettings,
                              locality: Optional[GridLocality] = None,
                              restriction: Optional[PairRestriction] = None) -> tuple[Tensor, Tensor]:
    """The kernel of :func:`midms_core.correspondence.attend_both_ways`, unchecked: both
    directions from ONE pass over the correlation blocks (``settings.fused`` does not apply).

    q: (Bq, C, Nq), k: (Bk, C, Nk) centre-normalised float32; key_values: (Bv, Nk, Cv);
    query_values: (Bu, Nq, Cu) float32; ``locality`` with its points on the query side;
    ``restriction`` with the condition on the query side. Returns forward (B, Nq, Cv) and
    backward (B, Nk, Cu), float32; rows and columns with no allowed partner are NaN.

    The correlation is symmetric, so each block of query rows is computed once: its rows' softmax
    is finished at once, and the columns' softmax is accumulated across blocks with a running
    maximum and sum (the streaming softmax), rescaling the partial sums whenever a column's
    maximum grows.
    """
    batch = max(q.shape[0], k.shape[0], key_values.shape[0], query_values.shape[0])
    if locality is not None:
        batch = max(batch, locality.points.shape[0], locality.weight.shape[0])
    n_query, n_key = q.shape[-1], k.shape[-1]
    rows = rows_per_chunk(n_key, settings.chunk_bytes // 2)  # the logits block and its column weights
    tau = settings.tau

    forward = q.new_empty((batch, n_query, key_values.shape[-1]))
    backward = q.new_empty((batch, n_key, query_values.shape[-1]))
    for b in range(batch):
        qb, kb = item(q, b).transpose(0, 1), item(k, b)  # (Nq, C), (C, Nk)
        kvb, qvb = item(key_values, b), item(query_values, b)  # (Nk, Cv), (Nq, Cu)
        col_max = q.new_full((n_key,), -float("inf"))
        col_sum = q.new_zeros(n_key)
        col_acc = q.new_zeros((n_key, qvb.shape[-1]))
        prepared = _prepared(locality, tuple(key_grid), b)
        for start in range(0, n_query, rows):
            checkpoint()  # a host's interrupt, between blocks
            logits = qb[start : start + rows] @ kb  # (r, Nk)
            if settings.clamp_negative:
                logits.clamp_(min=0.0)
            logits.div_(tau)
            if prepared is not None:
                subtract_locality(logits, *prepared, start)
            if restriction is not None:
                logits.masked_fill_(~allowed_block(restriction, b, start, logits.shape[0], n_key), -float("inf"))
            # columns: fold this block into the running softmax over queries
            new_max = torch.maximum(col_max, logits.amax(dim=0))
            shift = new_max.masked_fill(new_max == -float("inf"), 0.0)  # a column with nothing allowed yet
            rescale = torch.exp(col_max - shift)  # 0 for the first block (max was -inf)
            weights = torch.sub(logits, shift).exp_()  # (r, Nk), one temporary block
            col_sum.mul_(rescale).add_(weights.sum(dim=0))
            col_acc.mul_(rescale[:, None]).add_(weights.transpose(0, 1) @ qvb[start : start + rows])
            col_max = new_max
            del weights
            # rows: the block holds whole rows, so their softmax is final here
            forward[b, start : start + rows] = _softmax_rows(logits, kvb)
            del logits
        backward[b] = col_acc / col_sum[:, None]
    return forward, backward

"""Cross-domain correspondence and soft warping (paper Eq. 5-6), evaluated exactly in chunks.

Eq. 5: C(u, v) = <s_x(u) - mean_c s_x(u), s_y(v) - mean_c s_y(v)> / (|.| |.|), the cosine of
channel-centred features of condition position u and exemplar position v.
Eq. 6: R(u) = sum_v softmax_v(C(u, v) / tau) D_y(v).

The dense (Hx*Wx) x (Hy*Wy) matrix is never built whole: :func:`attend` streams over blocks of
query rows, so extra memory is ``rows * Ny`` floats for a block of rows plus the normalised
features, linear in the number of positions. Because each row's softmax only needs that row,
the blocked result equals the dense one up to float rounding. The softmax and the cosine always
run in float32 (with tau = 0.005 the logits are scaled by 200, so half precision would round
away most of the distribution) and results come back in the caller's dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .cancellation import checkpoint
from .validation import broadcast_batch, check_positive, check_tensor

DEFAULT_TAU = 0.005  # official MIDMs code (CoCosNet used 0.01)
DEFAULT_CHUNK_BYTES = 64 * 2**20  # one block of logits; 64 MiB keeps a 256x256 latent fast and lean
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


def rows_per_chunk(key_count: int, chunk_bytes: int) -> int:
    """How many query rows of float32 logits against ``key_count`` keys fit in ``chunk_bytes``."""
    return max(1, int(chunk_bytes) // (4 * key_count))


def _check_pair(
    where: str, query: Tensor, key: Tensor, values: Tensor, qname: str, kname: str, vname: str = "values"
) -> int:
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


def _flat_features(features: Tensor, normalised: bool) -> Tensor:
    """(B, C, H, W) -> (B, C, N) float32, channel-centred and normalised unless it already is."""
    return (features.float() if normalised else centre_normalise(features)).flatten(2)


class GridLocality(NamedTuple):
    """A locality term of the logits between positions p of one side, each with a point and a
    weight, and the cells g = (x, y) of the other side's grid: -w(p) |point(p) - g|^2, added
    after the clamp and the division by tau.

    points: (B, 2, H, W) (x, y) in the grid side's cell coordinates; weight: (B, 1, H, W) > 0;
    points_on: "query" (the grid is the keys' grid; e.g. the forward warp with a prior around
    T(u)) or "key" (the grid is the queries' grid; the backward direction of the same term).

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


def _check_locality(where: str, locality: Optional[GridLocality], query_features: Tensor, key_features: Tensor):
    """Validate a :class:`GridLocality` against the pair; returns the grid side's (h, w) or None."""
    if locality is None:
        return None
    if not isinstance(locality, GridLocality) or locality.points_on not in ("query", "key"):
        raise ValueError(f"{where}: 'locality' must be a GridLocality (points_on 'query' or 'key') or None, got {locality!r:.80}")
    points_side, grid_side = (query_features, key_features) if locality.points_on == "query" else (key_features, query_features)
    h, w = points_side.shape[-2:]
    for name, t, channels in (("points", locality.points, 2), ("weight", locality.weight, 1)):
        check_tensor(where, f"locality.{name}", t, 4, f"(B, {channels}, {h}, {w}) on the {locality.points_on} grid")
        if t.shape[1] != channels or tuple(t.shape[-2:]) != (h, w):
            raise ValueError(f"{where}: 'locality.{name}' must be (B, {channels}, {h}, {w}) on the {locality.points_on} grid, "
                             f"got {tuple(t.shape)}")
    return tuple(grid_side.shape[-2:])


def _locality_tensors(locality: Optional[GridLocality]) -> dict:
    """The batch-carrying tensors of a locality term, for :func:`broadcast_batch`."""
    return {} if locality is None else {"locality.points": locality.points, "locality.weight": locality.weight}


def _locality_tables(locality: GridLocality, grid: tuple[int, int], b: int) -> tuple[Tensor, Tensor]:
    """Per-axis tables of item b: X = w (p_x - x)^2 and Y = w (p_y - y)^2 for the N point
    positions against the grid's gw columns and gh rows, float32, laid out as the blocks read
    them: (N, gw), (N, gh) for points on the query side, (gw, N), (gh, N) for points on the key side."""
    gh, gw = grid
    points = _item(locality.points, b).float().flatten(1)  # (2, N)
    weight = _item(locality.weight, b).float().flatten()  # (N,)
    xs = torch.arange(gw, device=points.device, dtype=torch.float32)
    ys = torch.arange(gh, device=points.device, dtype=torch.float32)
    if locality.points_on == "query":
        return ((points[0][:, None] - xs[None, :]).square_().mul_(weight[:, None]),
                (points[1][:, None] - ys[None, :]).square_().mul_(weight[:, None]))
    return ((xs[:, None] - points[0][None, :]).square_().mul_(weight[None, :]),
            (ys[:, None] - points[1][None, :]).square_().mul_(weight[None, :]))


def _subtract_locality(logits: Tensor, tables: tuple[Tensor, Tensor], points_on: str, grid: tuple[int, int], start: int) -> None:
    """logits (r, Nk) for query rows start:start + r -= the locality term.

    points_on "query": the keys are the grid; tables (Nq, gw), (Nq, gh) of the points.
    points_on "key": the queries are the grid and the block holds whole grid rows (start and r
    multiples of gw); tables (gw, Nk), (gh, Nk).
    """
    table_x, table_y = tables
    gh, gw = grid
    r = logits.shape[0]
    if points_on == "query":
        view = logits.view(r, gh, gw)
        view.sub_(table_y[start : start + r, :, None]).sub_(table_x[start : start + r, None, :])
    else:
        view = logits.view(r // gw, gw, -1)
        row0 = start // gw
        view.sub_(table_x[None, :, :]).sub_(table_y[row0 : row0 + r // gw, None, :])


def _item(batch: Tensor, b: int) -> Tensor:
    """Item ``b`` of a batch that may broadcast (size 1)."""
    return batch[b if batch.shape[0] > 1 else 0]


def attend(
    query_features: Tensor,
    key_features: Tensor,
    values: Tensor,
    tau: float = DEFAULT_TAU,
    clamp_negative: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    normalised: bool = False,
    _names: tuple[str, str, str, str] = ("attend", "query_features", "key_features", "values"),
    locality: Optional[GridLocality] = None,
    fused: bool = True,
) -> Tensor:
    """Softmax-weighted average of ``values`` over key positions, for every query position.

    out(u) = sum_v softmax_v(C(u, v) / tau) values(v), C the channel-centred cosine (Eq. 5),
    clamped at 0 when ``clamp_negative`` (the official code does this). This one kernel gives the
    warp (Eq. 6: queries = condition, keys = exemplar), the soft-argmax forward flow (values =
    exemplar coordinates) and the backward flow (queries and keys swapped).

    query_features: (Bq, C, Hq, Wq); key_features: (Bk, C, Hk, Wk); values: (Bv, Cv, Hk, Wk).
    Batch sizes must match or be 1. Returns (B, Cv, Hq, Wq) in ``values.dtype``.
    ``normalised=True`` skips :func:`centre_normalise` for features the caller already normalised.
    ``locality`` (:class:`GridLocality`) subtracts a squared-distance term from every logit after
    the clamp and the division by tau, e.g. a locality prior
    (:class:`midms_core.alignment.SpatialPrior`); it is part of each row's logits, so the blocked
    softmax stays exact. Its batch joins the others (1 broadcasts).
    ``fused`` (default): the host's fused attention kernel (with the locality term as its additive
    mask), certified row by row against the clamp and falling back to the exact loop where it
    cannot be (:func:`_fused_rows`).
    Peak extra memory: about ``chunk_bytes`` plus the float32 features and values.
    """
    where = _names[0]
    batch = _check_pair(where, query_features, key_features, values, *_names[1:])
    tau = check_positive(where, "tau", tau)
    chunk_bytes = int(check_positive(where, "chunk_bytes", chunk_bytes))
    locality_grid = _check_locality(where, locality, query_features, key_features)
    if locality is not None:
        batch = broadcast_batch(where, **{_names[1]: query_features, _names[2]: key_features, _names[3]: values},
                                **_locality_tensors(locality))

    q = _flat_features(query_features, normalised)  # (Bq, C, Nq)
    k = _flat_features(key_features, normalised)  # (Bk, C, Nk)
    v = values.float().flatten(2).transpose(1, 2)  # (Bv, Nk, Cv)
    n_query, n_key = q.shape[-1], k.shape[-1]
    rows = rows_per_chunk(n_key, chunk_bytes)
    if locality is not None and locality.points_on == "key":
        rows = max(rows // locality_grid[1], 1) * locality_grid[1]  # whole rows of the query grid

    out = values.new_empty((batch, values.shape[1], n_query), dtype=torch.float32)
    for b in range(batch):
        qb, kb, vb = _item(q, b).transpose(0, 1), _item(k, b), _item(v, b)  # (Nq, C), (C, Nk), (Nk, Cv)
        tables = None if locality is None else _locality_tables(locality, locality_grid, b)
        if fused:
            loc = None if tables is None else (tables, locality.points_on, locality_grid)
            out[b] = _fused_rows(qb, kb, vb, tau, clamp_negative, rows, key_features.shape[-2:], loc).transpose(0, 1)
            continue
        for start in range(0, n_query, rows):
            checkpoint()  # a host's interrupt, between blocks
            block = _exact_rows(qb[start : start + rows], kb, vb, tau, clamp_negative,
                                None if tables is None else (tables, locality.points_on, locality_grid, start))
            out[b, :, start : start + rows] = block.transpose(0, 1)
    return out.view(batch, values.shape[1], *query_features.shape[-2:]).to(values.dtype)


def _exact_rows(q_rows: Tensor, kb: Tensor, vb: Tensor, tau: float, clamp_negative: bool,
                locality_args: Optional[tuple] = None) -> Tensor:
    """The definition, for a block of query rows: (r, C) against keys (C, Nk) and values
    (Nk, Cv) -> (r, Cv) float32. In-place stable softmax, rounded exactly as torch.softmax(L)
    rounds; the small (r, Cv) product is normalised instead of the (r, Nk) block."""
    logits = q_rows @ kb  # (r, Nk)
    if clamp_negative:
        logits.clamp_(min=0.0)
    logits.div_(tau)
    if locality_args is not None:
        _subtract_locality(logits, *locality_args)
    logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
    total = logits.sum(dim=1, keepdim=True)  # (r, 1)
    return (logits @ vb) / total


# A row's clamped and unclamped softmax averages differ by at most Nk exp(-m / tau) times the
# values' range, m = the row's best cosine (proof in _fused_rows). Below 2^-24 that is under
# float32's resolution of the values.
FUSED_CERTIFICATE_EPS = 2.0**-24


def _fused_rows(qb: Tensor, kb: Tensor, vb: Tensor, tau: float, clamp_negative: bool, rows: int,
                key_grid, locality: Optional[tuple] = None) -> Tensor:
    """:func:`attend` for one item through the host's fused attention kernel
    (``scaled_dot_product_attention``: no (r, Nk) block of logits in memory on kernels that fuse),
    exact with respect to the clamped definition within float32 resolution.

    The kernel computes the UNCLAMPED softmax. For a row u with best cosine m >= 0, unclamped
    weights a_v = exp(c_v / tau) and clamped ones b_v = exp(max(c_v, 0) / tau) differ only where
    c_v < 0, by d_v = 1 - a_v in [0, 1); with D = sum d_v <= Nk and Z_b = sum b_v >= exp(m / tau),
    the clamped average is (Z_a out_a + D y) / Z_b (y an average of the values), so
    |out_b - out_a| <= D / Z_b * range(values) <= Nk exp(-m / tau) * range(values).
    m is bounded from below by c(u, v') for cells v' near the row's soft-argmax position (read
    from two extra value channels: the key coordinates), the best of a 3 x 3 neighbourhood. Rows
    where Nk exp(-c(u, v') / tau) > 2^-24 are recomputed by the exact loop (:func:`_exact_rows`).

    With a locality term (``locality`` = (tables, points_on, grid) of :func:`_locality_tables`)
    the kernel gets it as an additive mask, block by block (the mask block is the size of the
    loop's logits block, made by the same exact subtractions): logits c / tau - l(u, v), l >= 0.
    The clamp then adds at most exp(-l_v) <= 1 per key and the row's total is at least
    exp(c(u, v') / tau - l(u, v')) for any v', so the same bound holds with m / tau replaced by
    the best c(u, v') / tau - l(u, v') of the 3 x 3 cells.

    qb: (Nq, C); kb: (C, Nk); vb: (Nk, Cv); key_grid: (Hk, Wk). Returns (Nq, Cv) float32.
    """
    n_query, n_key = qb.shape[0], kb.shape[1]
    keys = kb.transpose(0, 1).contiguous()  # (Nk, C)
    hk, wk = int(key_grid[0]), int(key_grid[1])
    augmented = vb
    if clamp_negative:
        cells = coordinate_grid(1, hk, wk, device=vb.device).flatten(2)[0].transpose(0, 1)  # (Nk, 2): x, y
        augmented = torch.cat([vb, cells], dim=1)
    out = vb.new_empty((n_query, vb.shape[1]))
    threshold = math.log(n_key) + math.log(1 / FUSED_CERTIFICATE_EPS)  # on the logit scale
    for start in range(0, n_query, rows):
        checkpoint()  # a host's interrupt, between blocks
        q_rows = qb[start : start + rows]
        mask = None
        if locality is not None:
            tables, points_on, grid = locality
            mask = q_rows.new_zeros((q_rows.shape[0], n_key))
            _subtract_locality(mask, tables, points_on, grid, start)  # -l(u, v), exactly as the loop
        fused = F.scaled_dot_product_attention(q_rows[None, None], keys[None, None], augmented[None, None],
                                               attn_mask=None if mask is None else mask[None, None],
                                               scale=1.0 / tau)[0, 0]  # (r, Cv [+ 2])
        out[start : start + rows] = fused[:, : vb.shape[1]]
        if not clamp_negative:
            continue
        best = _best_logit_near(q_rows, keys, fused[:, vb.shape[1]:], hk, wk, tau, mask)  # <= the row's max
        unsafe = torch.nonzero(best < threshold).flatten()
        if unsafe.numel():
            out[start + unsafe] = _exact_rows_subset(q_rows, unsafe, kb, vb, tau, mask)
    return out


def _exact_rows_subset(q_rows: Tensor, unsafe: Tensor, kb: Tensor, vb: Tensor, tau: float,
                       mask: Optional[Tensor]) -> Tensor:
    """The clamped definition for the rows ``unsafe`` of a block, with the block's locality mask
    (-l(u, v), (r, Nk)) when there is one."""
    if mask is None:
        return _exact_rows(q_rows[unsafe], kb, vb, tau, True)
    logits = (q_rows[unsafe] @ kb).clamp_(min=0.0).div_(tau).add_(mask[unsafe])
    logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
    return (logits @ vb) / logits.sum(dim=1, keepdim=True)


def _best_logit_near(q_rows: Tensor, keys: Tensor, position: Tensor, hk: int, wk: int, tau: float,
                     mask: Optional[Tensor]) -> Tensor:
    """max over the 3 x 3 key cells v' around each row's (x, y) ``position`` of the unclamped logit
    c(u, v') / tau (+ the mask's -l(u, v')): (r,), a lower bound of the row's largest logit (it
    is one of the row's logits)."""
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
    return best


# From this feature width on, one pass over the correlation for both directions is faster than
# two (2 CPU cores, 128 x 128 latents, A/B in one process: 1164 channels 0.67x the time of two
# passes, 640 channels 0.81x, 256 channels 1.07x: the extra exp pass outweighs the saved matmul).
# Not measured on a GPU.
ONE_PASS_MIN_CHANNELS = 512


def attend_both_ways(
    query_features: Tensor,
    key_features: Tensor,
    key_values: Tensor,
    query_values: Tensor,
    tau: float = DEFAULT_TAU,
    clamp_negative: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    normalised: bool = False,
    locality: Optional[GridLocality] = None,
) -> tuple[Tensor, Tensor]:
    """:func:`attend` in both directions from ONE pass over the correlation blocks.

    forward  = attend(query, key, key_values):   (B, Cv, Hq, Wq), softmax over keys per query;
    backward = attend(key, query, query_values): (B, Cu, Hk, Wk), softmax over queries per key.

    The correlation is symmetric (C(u, v) of the backward direction is the forward C(v, u)), so
    each block of query rows is computed once: its rows' softmax is finished at once, and the
    columns' softmax is accumulated across blocks with a running maximum and sum (the streaming
    softmax), rescaling the partial sums whenever a column's maximum grows. Saves one
    N x N x C matmul for one extra exp over each block; worth it for wide features
    (:data:`ONE_PASS_MIN_CHANNELS`). Peak extra memory: about ``chunk_bytes`` (two blocks of
    half the rows) plus the features.

    query_features: (Bq, C, Hq, Wq); key_features: (Bk, C, Hk, Wk); key_values: (Bv, Cv, Hk, Wk);
    query_values: (Bu, Cu, Hq, Wq). Batch sizes must match or be 1. Results in float32.
    ``locality`` as in :func:`attend`, with its points on the query side (the keys' grid): one
    term shared by both directions.
    """
    where = "attend_both_ways"
    _check_pair(where, query_features, key_features, key_values, "query_features", "key_features", "key_values")
    _check_pair(where, key_features, query_features, query_values, "key_features", "query_features", "query_values")
    batch = broadcast_batch(where, query_features=query_features, key_features=key_features, key_values=key_values,
                            query_values=query_values, **_locality_tensors(locality))
    tau = check_positive(where, "tau", tau)
    chunk_bytes = int(check_positive(where, "chunk_bytes", chunk_bytes))

    q = _flat_features(query_features, normalised)  # (Bq, C, Nq)
    k = _flat_features(key_features, normalised)  # (Bk, C, Nk)
    kv = key_values.float().flatten(2).transpose(1, 2)  # (Bv, Nk, Cv)
    qv = query_values.float().flatten(2).transpose(1, 2)  # (Bu, Nq, Cu)
    n_query, n_key = q.shape[-1], k.shape[-1]
    locality_grid = _check_locality(where, locality, query_features, key_features)
    if locality is not None and locality.points_on != "query":
        raise ValueError(f"{where}: 'locality' must have its points on the query side (points_on 'query')")
    rows = rows_per_chunk(n_key, chunk_bytes // 2)  # the logits block and its column weights

    forward = q.new_empty((batch, n_query, kv.shape[-1]))
    backward = q.new_empty((batch, n_key, qv.shape[-1]))
    for b in range(batch):
        qb, kb = _item(q, b).transpose(0, 1), _item(k, b)  # (Nq, C), (C, Nk)
        kvb, qvb = _item(kv, b), _item(qv, b)  # (Nk, Cv), (Nq, Cu)
        col_max = q.new_full((n_key,), -float("inf"))
        col_sum = q.new_zeros(n_key)
        col_acc = q.new_zeros((n_key, qvb.shape[-1]))
        tables = None if locality is None else _locality_tables(locality, locality_grid, b)
        for start in range(0, n_query, rows):
            checkpoint()  # a host's interrupt, between blocks
            logits = qb[start : start + rows] @ kb  # (r, Nk)
            if clamp_negative:
                logits.clamp_(min=0.0)
            logits.div_(tau)
            if tables is not None:
                _subtract_locality(logits, tables, "query", locality_grid, start)
            # columns: fold this block into the running softmax over queries
            new_max = torch.maximum(col_max, logits.amax(dim=0))
            rescale = torch.exp(col_max - new_max)  # 0 for the first block (max was -inf)
            weights = torch.sub(logits, new_max).exp_()  # (r, Nk), one temporary block
            col_sum.mul_(rescale).add_(weights.sum(dim=0))
            col_acc.mul_(rescale[:, None]).add_(weights.transpose(0, 1) @ qvb[start : start + rows])
            col_max = new_max
            del weights
            # rows: the block holds whole rows, so their softmax is final here (as in attend)
            logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
            forward[b, start : start + rows] = (logits @ kvb) / logits.sum(dim=1, keepdim=True)
            del logits
        backward[b] = col_acc / col_sum[:, None]
    forward = forward.transpose(1, 2).reshape(batch, kv.shape[-1], *query_features.shape[-2:])
    backward = backward.transpose(1, 2).reshape(batch, qv.shape[-1], *key_features.shape[-2:])
    return forward, backward


def attend_dense(
    query_features: Tensor,
    key_features: Tensor,
    values: Tensor,
    tau: float = DEFAULT_TAU,
    clamp_negative: bool = True,
    locality: Optional[GridLocality] = None,
) -> Tensor:
    """The same as :func:`attend` with the whole (Nq x Nk) matrix built at once, as the official
    code does. Kept as the memory baseline for benchmarks; prefer :func:`attend`."""
    where = "attend_dense"
    _check_pair(where, query_features, key_features, values, "query_features", "key_features")
    logits = correlation_logits(query_features, key_features, check_positive(where, "tau", tau), clamp_negative)
    grid = _check_locality(where, locality, query_features, key_features)
    if locality is not None:
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
    tau: float = DEFAULT_TAU,
    clamp_negative: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    locality: Optional[GridLocality] = None,
) -> Tensor:
    """Warp any exemplar tensor onto the condition grid (Eq. 6).

    condition_features: (B, C, Hx, Wx) S_x; exemplar_features: (B, C, Hy, Wy) S_y;
    exemplar_values: (B, Cv, Hy, Wy) latent, image, mask or coordinates on the exemplar grid.
    Returns (B, Cv, Hx, Wx) in ``exemplar_values.dtype``. ``locality``: as in :func:`attend`.
    """
    return attend(
        condition_features, exemplar_features, exemplar_values, tau, clamp_negative, chunk_bytes,
        _names=("warp", "condition_features", "exemplar_features", "exemplar_values"), locality=locality,
    )


def soft_argmax_flow(
    query_features: Tensor,
    key_features: Tensor,
    tau: float = DEFAULT_TAU,
    clamp_negative: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    locality: Optional[GridLocality] = None,
) -> Tensor:
    """Soft-argmax map from the query grid into the key grid, in key-grid pixel coordinates.

    (Bq, C, Hq, Wq), (Bk, C, Hk, Wk) -> (B, 2, Hq, Wq): channel 0 = x, channel 1 = y of the
    expected matching key position. Condition -> exemplar is the forward flow; swap the
    arguments for the backward flow. Returned in float32.
    """
    check_tensor("soft_argmax_flow", "key_features", key_features, 4, "(B, C, H, W)")
    grid = coordinate_grid(1, key_features.shape[-2], key_features.shape[-1], key_features.device)
    return attend(
        query_features, key_features, grid, tau, clamp_negative, chunk_bytes,
        _names=("soft_argmax_flow", "query_features", "key_features", "coordinates"), locality=locality,
    )

"""Byte moves: the one description behind every operator that only rearranges int8 values
(TRANSPOSE, STRIDED_SLICE, PACK, UNPACK, SPLIT, CONCATENATION along any axis) and REDUCE_MAX.

A tensor's device bytes are its row-major bytes (layout.to_device), whatever its rank. A move
copies, for every index (i0..i4) below ``count``, the byte at ``src_off + sum(i_k * src_stride_k)``
of one input to ``dst_off + sum(i_k * dst_stride_k)`` of the output: five nested loops in C
(runtime_c/nupes_move.c). An operator is described once, as numpy index arrays over any rank
(``affine_moves`` turns them into moves), so its semantics live in one place and the C loops
never change. A move is a flat list of 17 ints: count[5], src_off, src_stride[5], dst_off,
dst_stride[5].
"""
from __future__ import annotations

import math

import numpy as np

DIMS = 5
MOVE_INTS = 3 * DIMS + 2
_LIMIT = 1 << 24  # elements a move may touch (the IR's tensor bound)


class MoveError(ValueError):
    pass


def _compress(arrays: list[np.ndarray]) -> tuple[list[int], list[list[int]]]:
    """Counts and per-array strides of index arrays that are affine in the element index, with
    unit dimensions dropped and contiguous ones merged; MoveError if they are not affine."""
    shape = arrays[0].shape
    dims = [d for d in range(len(shape)) if shape[d] > 1]
    counts = [shape[d] for d in dims]
    strides = []
    for a in arrays:
        origin = (0,) * a.ndim
        st = []
        for d in dims:
            unit = [0] * a.ndim
            unit[d] = 1
            st.append(int(a[tuple(unit)]) - int(a[origin]))
        strides.append(st)
    # merge dimension k into k-1 when every array steps through k-1 as one run of k
    k = len(counts) - 1
    while k > 0:
        if all(st[k - 1] == st[k] * counts[k] for st in strides):
            counts[k - 1] *= counts[k]
            del counts[k]
            for st in strides:
                st[k - 1] = st[k]
                del st[k]
        k -= 1
    return counts, strides


def _check_affine(a: np.ndarray, off: int, counts: list[int], strides: list[int]) -> bool:
    idx = np.full(counts or [1], off, np.int64)
    for d, (n, s) in enumerate(zip(counts, strides)):
        view = [1] * max(len(counts), 1)
        view[d] = n
        idx = idx + (np.arange(n, dtype=np.int64) * s).reshape(view)
    return np.array_equal(idx.ravel(), np.asarray(a, np.int64).ravel())


def affine_move(src: np.ndarray, dst: np.ndarray) -> list[int]:
    """One move copying ``src`` positions (of an input) to ``dst`` positions (of the output), two
    index arrays of one shape."""
    if src.shape != dst.shape:
        raise MoveError(f"index arrays of shapes {src.shape} and {dst.shape}")
    if src.size == 0:
        raise MoveError("an empty move")
    counts, (ss, ds) = _compress([src, dst])
    if len(counts) > DIMS:
        raise MoveError(f"a rearrangement of {len(counts)} independent dimensions (at most {DIMS})")
    s0, d0 = int(src.flat[0]), int(dst.flat[0])
    if not (_check_affine(src, s0, counts, ss) and _check_affine(dst, d0, counts, ds)):
        raise MoveError("not a strided rearrangement")
    pad = DIMS - len(counts)
    return [*([1] * pad), *counts, s0, *([0] * pad), *ss, d0, *([0] * pad), *ds]


def nearest_rows(out_size: int, in_size: int, align_corners: bool = False, half_pixel_centers: bool = False) -> np.ndarray:
    """The input row (or column) each output row reads in a nearest-neighbour resize: TFLite Micro's
    GetNearestNeighbor, in float32 as it computes (PyTorch's 'nearest' is the plain case)."""
    f32 = np.float32
    scale = (f32(in_size - 1) / f32(out_size - 1)) if align_corners and out_size > 1 else f32(in_size) / f32(out_size)
    pos = (np.arange(out_size, dtype=f32) + f32(0.5 if half_pixel_centers else 0.0)) * scale
    pos = np.floor(pos + f32(0.5)) if align_corners else np.floor(pos)  # TfLiteRound: half away from 0 (pos >= 0)
    out = np.minimum(pos.astype(np.int64), in_size - 1)
    return np.maximum(out, 0) if half_pixel_centers else out


def repeats_split(src: np.ndarray, dst: np.ndarray, maps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """An upsampling's index arrays with each axis that repeats every input row f times (maps[i]
    for axis i + 1) split into (rows, f), so that the positions are strided in every axis."""
    axis = 1
    for m in maps:
        n = len(m)
        f = int(np.sum(m == m[0]))
        if f > 1 and n % f == 0 and np.array_equal(m, np.repeat(m[::f], f)):
            shape = list(src.shape)
            shape[axis:axis + 1] = [n // f, f]
            src, dst = src.reshape(shape), dst.reshape(shape)
            axis += 2
        else:
            axis += 1
    return src, dst


def zero_insertion(shape: tuple[int, int, int], stride, pads) -> tuple[list[int], list[int]]:
    """A transposed convolution's input as a stride-1 convolution reads it: the C×H×W input's pixels
    ``stride`` apart, ``pads`` (top, left, bottom, right; negative crops) around them, zeros between.
    Returns the output's C×H×W shape and the one move (unwritten bytes take the zero point: fill)."""
    c, h, w = shape
    (sh, sw), (pt, pl, pb, pr) = stride, pads
    oh, ow = pt + (h - 1) * sh + 1 + pb, pl + (w - 1) * sw + 1 + pr
    if min(c, oh, ow) < 1:
        raise MoveError(f"a zero insertion of {h}x{w} with stride {sh}x{sw} and pads {list(pads)} is empty")
    ys, xs = pt + np.arange(h) * sh, pl + np.arange(w) * sw
    ky, kx = (ys >= 0) & (ys < oh), (xs >= 0) & (xs < ow)  # rows and columns a negative pad crops
    if not ky.any() or not kx.any():
        raise MoveError(f"pads {list(pads)} crop every input pixel")
    src = np.arange(h * w * c, dtype=np.int64).reshape(h, w, c)[ky][:, kx]
    dst = (ys[ky][:, None, None] * ow + xs[kx][None, :, None]) * c + np.arange(c)[None, None, :]
    return [c, oh, ow], affine_move(src, dst)


def unpack(move) -> tuple[list[int], int, list[int], int, list[int]]:
    m = [int(v) for v in move]
    return m[:DIMS], m[DIMS], m[DIMS + 1:2 * DIMS + 1], m[2 * DIMS + 1], m[2 * DIMS + 2:]


def _positions(counts, off, strides) -> np.ndarray:
    idx = np.full(counts, off, np.int64)
    for d, (n, s) in enumerate(zip(counts, strides)):
        view = [1] * DIMS
        view[d] = n
        idx = idx + (np.arange(n, dtype=np.int64) * s).reshape(view)
    return idx.ravel()


def check_moves(moves, in_sizes: list[int], out_size: int, fill: bool = False) -> None:
    """Untrusted moves (a .nq is untrusted): well formed, inside every tensor, and together writing
    each output byte exactly once (``fill``: at most once, the others hold the zero point). MoveError
    names the problem."""
    if not isinstance(moves, (list, tuple)) or len(moves) != len(in_sizes):
        raise MoveError(f"{len(moves) if isinstance(moves, (list, tuple)) else 'no'} moves for {len(in_sizes)} inputs")
    written = np.zeros(out_size, np.int64)
    for move, n_in in zip(moves, in_sizes):
        if not (isinstance(move, (list, tuple)) and len(move) == MOVE_INTS
                and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= _LIMIT for v in move)):
            raise MoveError(f"a move must be {MOVE_INTS} integers of at most {_LIMIT} in size")
        counts, s0, ss, d0, ds = unpack(move)
        if min(counts) < 1 or math.prod(counts) > out_size:
            raise MoveError(f"move counts {counts} do not fit an output of {out_size} values")
        src, dst = _positions(counts, s0, ss), _positions(counts, d0, ds)
        if src.min() < 0 or src.max() >= n_in or dst.min() < 0 or dst.max() >= out_size:
            raise MoveError(f"a move reaches outside its tensors ({n_in} -> {out_size} values)")
        np.add.at(written, dst, 1)
    if fill and written.max(initial=0) > 1:
        raise MoveError("the moves write an output value twice")
    if not fill and not (written == 1).all():
        raise MoveError("the moves do not write every output value exactly once")


def apply_moves(flats: list[np.ndarray], moves, out_size: int, fill=None) -> np.ndarray:
    """(N, bytes) device-order inputs -> (N, out_size): what the C loops do. ``fill``: the value of
    the bytes no move writes (a zero insertion's zero point)."""
    out = np.empty((len(flats[0]), out_size), flats[0].dtype) if fill is None else \
        np.full((len(flats[0]), out_size), fill, flats[0].dtype)
    for x, move in zip(flats, moves):
        counts, s0, ss, d0, ds = unpack(move)
        out[:, _positions(counts, d0, ds)] = x[:, _positions(counts, s0, ss)]
    return out


def gather_index(moves, in_sizes: list[int], out_size: int) -> np.ndarray:
    """Each output byte's position in the inputs' bytes laid end to end (the exporter's GATHER); -1
    for a byte no move writes (a zero insertion's zero point)."""
    index = np.full(out_size, -1, np.int64)
    base = 0
    for move, n_in in zip(moves, in_sizes):
        counts, s0, ss, d0, ds = unpack(move)
        index[_positions(counts, d0, ds)] = base + _positions(counts, s0, ss)
        base += n_in
    return index


# -- REDUCE_MAX: outer dims walk the output, inner dims the values reduced into one ----------------
def reduce_move(index: np.ndarray, kept: int) -> list[int]:
    """``index``: input positions, the ``kept`` output axes first, the reduced axes after. Returns
    [outer count[5], src_off, outer stride[5], inner count[5], inner stride[5]] (outputs row-major)."""
    n_out = math.prod(index.shape[:kept])
    flat = index.reshape(n_out, -1)
    outer = flat[:, 0].reshape(index.shape[:kept] or (1,))
    inner = flat[0].reshape(index.shape[kept:] or (1,))
    oc, (os_,) = _compress([outer])
    ic, (is_,) = _compress([inner])
    if len(oc) > DIMS or len(ic) > DIMS:
        raise MoveError("a reduction over more than 5 independent dimensions")
    s0 = int(index.flat[0])
    full = (_positions([*([1] * (DIMS - len(oc))), *oc], s0, [*([0] * (DIMS - len(oc))), *os_])[:, None]
            + _positions([*([1] * (DIMS - len(ic))), *ic], 0, [*([0] * (DIMS - len(ic))), *is_])[None, :])
    if not np.array_equal(full, flat.astype(np.int64)):
        raise MoveError("not a strided reduction")
    po, pi = DIMS - len(oc), DIMS - len(ic)
    return [*([1] * po), *oc, s0, *([0] * po), *os_, *([1] * pi), *ic, *([0] * pi), *is_]


REDUCE_INTS = 4 * DIMS + 1


def reduce_count(move) -> int:
    """How many values a reduction folds into each output (MEAN's divisor)."""
    return math.prod(int(v) for v in move[2 * DIMS + 1:3 * DIMS + 1])


def reduce_positions(move, n_in: int, n_out: int) -> np.ndarray:
    """(n_out, reduced) input positions of an untrusted reduce move; MoveError if it is malformed."""
    if not (isinstance(move, (list, tuple)) and len(move) == REDUCE_INTS
            and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= _LIMIT for v in move)):
        raise MoveError(f"a reduction must be {REDUCE_INTS} integers of at most {_LIMIT} in size")
    m = [int(v) for v in move]
    oc, s0, os_, ic, is_ = m[:DIMS], m[DIMS], m[DIMS + 1:2 * DIMS + 1], m[2 * DIMS + 1:3 * DIMS + 1], m[3 * DIMS + 1:]
    if min(oc + ic) < 1 or math.prod(oc) != n_out or math.prod(oc) * math.prod(ic) > n_in:
        raise MoveError(f"reduction counts {oc} x {ic} do not fit {n_in} -> {n_out} values")
    pos = _positions(oc, s0, os_)[:, None] + _positions(ic, 0, is_)[None, :]
    if pos.min() < 0 or pos.max() >= n_in:
        raise MoveError(f"a reduction reaches outside its input ({n_in} values)")
    return pos

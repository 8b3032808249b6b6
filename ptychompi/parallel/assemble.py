"""Stitching the ranks' tiles into the global object (DESIGN.md section 6)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .tiling import Box, Tile


def _weighted_average(numerator: np.ndarray, weight: np.ndarray, fill: complex) -> np.ndarray:
    lit = weight > 0
    out = np.full(numerator.shape, fill, dtype=numerator.dtype)
    np.divide(numerator, weight, out=out, where=lit)
    return out


def assemble(local_numerator: np.ndarray, local_weight: np.ndarray, tile: Tile,
             object_shape: tuple[int, int], comm: Any | None, root: int = 0,
             fill: complex = 1.0) -> np.ndarray | None:
    """The global object ``sum_r w_r O_r / sum_r w_r`` on the ``object_shape`` grid, on ``root``.

    ``local_numerator`` is ``w * O`` and ``local_weight`` is ``w`` on this rank's box (host
    numpy arrays of shape ``tile.box.shape``). Each rank's box travels once to ``root`` (one
    ``Gatherv`` for the numerators, one for the weights); only ``root`` builds global arrays.
    Pixels with zero total weight get ``fill``. Returns the object on ``root``, ``None``
    elsewhere. Collective over ``comm`` (``None``: this process alone).
    """
    num = np.ascontiguousarray(local_numerator)
    w = np.ascontiguousarray(local_weight)
    if num.shape != tile.box.shape or w.shape != tile.box.shape:
        raise ValueError(f"assemble: numerator {num.shape} and weight {w.shape} must both "
                         f"have the tile's box shape {tile.box.shape}")
    box = tile.box
    if comm is None or comm.Get_size() == 1:
        total_num = np.zeros(object_shape, dtype=num.dtype)
        total_w = np.zeros(object_shape, dtype=w.dtype)
        total_num[box.slices()] = num
        total_w[box.slices()] = w
        return _weighted_average(total_num, total_w, fill)

    # every rank learns every box and the common dtypes (small), then the boxes travel
    meta = comm.allgather(((box.r0, box.c0, box.r1, box.c1), num.dtype.str, w.dtype.str))
    boxes = [Box(*m[0]) for m in meta]
    num_dtype = np.result_type(*(np.dtype(m[1]) for m in meta))
    w_dtype = np.result_type(*(np.dtype(m[2]) for m in meta))
    num = num.astype(num_dtype, copy=False)
    w = w.astype(w_dtype, copy=False)
    rank = comm.Get_rank()
    counts = [b.shape[0] * b.shape[1] for b in boxes]
    displs = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
    if rank == root:
        all_num = np.empty(sum(counts), dtype=num_dtype)
        all_w = np.empty(sum(counts), dtype=w_dtype)
        comm.Gatherv(num, [all_num, (counts, displs)], root=root)
        comm.Gatherv(w, [all_w, (counts, displs)], root=root)
    else:
        comm.Gatherv(num, None, root=root)
        comm.Gatherv(w, None, root=root)
        return None
    total_num = np.zeros(object_shape, dtype=num_dtype)
    total_w = np.zeros(object_shape, dtype=w_dtype)
    for b, n, d in zip(boxes, counts, displs, strict=True):
        total_num[b.slices()] += all_num[d:d + n].reshape(b.shape)
        total_w[b.slices()] += all_w[d:d + n].reshape(b.shape)
    return _weighted_average(total_num, total_w, fill)


def scatter_object(global_object: np.ndarray, tile: Tile) -> np.ndarray:
    """This tile's box of a global array (``(..., H, W)``), as a contiguous copy."""
    rs, cs = tile.box.slices()
    return np.array(global_object[..., rs, cs], copy=True)

"""LSQML's halo illumination recomputed on every rank instead of sent (issue 20).

In a batch's halo sum the object-gradient sum (the numerator) must travel, but the
illumination Σ|P_j|² over the batch's windows (the denominator) depends only on the window
corners of every frame (:class:`~ptychompi.parallel.sparse_halo.TouchedHalo` has them all),
each frame's sub-pixel shift (LSQML's global shift keys) and the probe, which every rank
holds alike. Every rank sharing a halo pixel sums the same windows in the same order in
double precision, so their copies agree bitwise and only the numerator crosses the network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.physics import subpixel_ramps


def probe_power(probe: Any) -> np.ndarray:
    """Σ over modes of |probe|² ((K, M, M) → (M, M)) in double precision."""
    q = np.asarray(probe).astype(np.complex128)
    return (q.real ** 2 + q.imag ** 2).sum(axis=0)


def shift_powers(backend: Any, probe: Any, keys: np.ndarray, bins: int) -> np.ndarray:
    """(G, M, M) powers of the probe shifted by each shift key (``row * (bins + 1) + col``
    in steps of ``1 / bins`` px, as LSQML's global shift keys), one shift at a time (the
    same transform on every rank, whichever other shifts it needs)."""
    frame = int(np.asarray(probe).shape[-1])
    probe_ft = backend.fft2(probe)
    out = np.empty((len(keys), *np.asarray(probe).shape[-2:]), dtype=np.float64)
    for g, key in enumerate(np.asarray(keys, dtype=np.int64)):
        fraction = np.array([[key // (bins + 1), key % (bins + 1)]], dtype=np.int64) / bins
        ramps = subpixel_ramps(backend, fraction, frame)
        out[g] = probe_power(backend.ops.shifted_probes(probe_ft, ramps, probe)[0])
    return out


def numerator_scale(engine: Any, illum: np.ndarray) -> tuple[Any, np.ndarray, float] | None:
    """(object, illumination, λ') for :meth:`TouchedHalo.sum`'s ``scale``: the numerator
    moves the object by ``α N / sqrt(D² + λ)``, λ = (δ max D)² over all ranks, of which
    this rank's largest D gives a lower bound λ' (the halo's illumination is set first).
    None (the numerator as computed) while positions are refined: their gradients amplify
    the rounding (n ranks vs one 1.4e-5 instead of 2.8e-6 at 4 ranks)."""
    if getattr(engine, "refiner", None) is not None:
        return None
    top = float(illum.max()) if illum.size else 0.0
    return engine.object, illum, (engine.cfg.lsqml.delta * top) ** 2


def halo_illumination(engine: Any, touched: Any, part: np.ndarray, illum: np.ndarray) -> None:
    """Set ``illum`` over every halo of ``touched`` to the whole batch ``part``'s
    illumination (all ranks' windows), computed here."""
    frames = touched.near(part)
    shift_of = engine._shift_of
    if shift_of is None:  # one probe for every frame
        powers = probe_power(engine.probe)[None]
        which = np.zeros(len(frames), dtype=np.int64)
    else:
        keys, which = np.unique(shift_of[frames], return_inverse=True)
        powers = shift_powers(engine.backend, engine.probe, keys, engine.cfg.subpixel_bins)
    touched.illumination(frames, which.reshape(-1), powers, illum)

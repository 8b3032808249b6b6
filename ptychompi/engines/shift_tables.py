"""Window placement and the sub-pixel shift tables of an engine's positions (the part of
:class:`~ptychompi.engines.base.Engine` that knows where each position's window and shifted
probe are)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.physics import Windows, runs_of, subpixel_grid, subpixel_ramps, window_index
from ..ops import ProbeShifts
from .positions import between_bins


class ShiftTables:
    """Windows, sub-pixel ramps and shifted probes of the positions (an :class:`Engine` mixin:
    it reads ``cfg``, ``backend``, ``data`` and ``probe``)."""

    def _place(self, positions: np.ndarray) -> None:
        """Window corners, sub-pixel shift table, ramps and window index of ``positions``."""
        cfg, backend, frame = self.cfg, self.backend, self.data.frame
        top, table, ramp_id = subpixel_grid(positions, cfg.subpixel_bins if cfg.subpixel else 0)
        self.rows, self.cols = top[:, 0], top[:, 1]
        self.ramp_id = ramp_id  # each position's row of the shift table
        self._ramp_id_device = backend.xp.asarray(ramp_id)  # the same on the device (one copy)
        self.fractions = table[ramp_id]
        # refined positions between the bins (positions.between_bins): each one's remainder
        # past its bin, or None (rounded to the bins); the same decision on every rank
        self.between_bins = between_bins(cfg, self.name)
        rest = np.asarray(positions, np.float64).reshape(-1, 2) - top - self.fractions
        self._rest = rest if self.between_bins and len(top) else None
        # flat window indices (B, M, M), 8 bytes a pixel a position: only the array-module
        # operations take them (the compiled ones take the corners)
        self.index = (None if backend.ops.compiled else
                      backend.xp.asarray(window_index(self.rows, self.cols, frame,
                                                      self.data.box_shape[1])))
        use_ramps = cfg.subpixel and len(top) and (np.abs(self.fractions).max() > 1e-3
                                                   or self._rest is not None)
        self.use_subpixel = bool(use_ramps)
        # the ramps (2 x G x M) of the shifts, computed once per placement
        self._ramps = subpixel_ramps(backend, table, frame) if self.use_subpixel else None

    def _device_sel(self, sel: Any) -> Any:
        """A position selection (slice or host index array) usable on the device."""
        return sel if isinstance(sel, slice) else self.backend.xp.asarray(sel)

    def ramps(self, sel: Any = slice(None)) -> tuple[Any, Any] | None:
        """Sub-pixel Fourier ramps (B, M) per axis of positions ``sel``, or None."""
        if self._ramps is None:
            return None
        ids = self.shift_rows(sel)
        return self._ramps[0][ids], self._ramps[1][ids]

    def shift_rows(self, sel: Any) -> Any:
        """Each position's row of the shift table (its ramps, its shifted probe), on the
        device."""
        return self._ramp_id_device[self._device_sel(sel)]

    def runs(self, sel: Any) -> np.ndarray | None:
        """Start offsets (within ``sel``) of the runs of positions that share one sub-pixel
        shift (None without shifts, or with exact positions, which never share one). Runs
        of one position count too: a run's terms are back-shifted in double precision
        whatever its length, so the result does not depend on how the positions are split
        over tiles."""
        if self._ramps is None or self.cfg.subpixel_bins <= 0:
            return None
        return runs_of(self.ramp_id[sel])

    def windows(self, sel: Any) -> Windows:
        """The object windows of positions ``sel`` (flat indices only on a GPU)."""
        index = None if self.index is None else self.index[self._device_sel(sel)]
        return Windows(self.rows[sel], self.cols[sel], index, self.data.frame)

    def probes_at(self, sel: Any, probe_ft: Any | None = None) -> Any:
        """Probes (B, K, M, M) at positions ``sel`` (sub-pixel shifted) or (1, K, M, M).

        Positions that share a shift share one inverse FFT (see :meth:`probe_set`).
        """
        distinct, member = self.probe_set(sel, probe_ft)
        return distinct if member is None else distinct[member]

    def probe_set(self, sel: Any, probe_ft: Any | None = None) -> tuple[Any, Any | None]:
        """The distinct shifted probes (G, K, M, M) of positions ``sel`` and each position's
        row in them (None: one row per position, or the unshifted probe (1, K, M, M)).
        Positions between bins get their own
        (:meth:`~ptychompi.ops.steps.Operations.between_bin_probes`)."""
        shifts = self.shifts(sel, probe_ft)
        if shifts is None or self._rest is None:
            return self.backend.ops.shifted_set(self.probe, shifts)
        return self.backend.ops.between_bin_probes(self.probe, shifts, self._rest[sel]), None

    def shifts(self, sel: Any, probe_ft: Any | None = None) -> ProbeShifts | None:
        """How positions ``sel`` see the probe (its spectrum ``probe_ft``, made here when not
        given) with sub-pixel shifts, or None without them."""
        if self._ramps is None:
            return None
        if probe_ft is None:
            probe_ft = self.backend.fft2(self.probe)
        return ProbeShifts(spectrum=probe_ft, table=self._ramps, ids=self.ramp_id[sel])

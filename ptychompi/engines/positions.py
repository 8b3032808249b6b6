"""Position refinement for every engine (issue 18; Odstrčil, Menzel & Guizar-Sicairos 2018).

Every ``update_every`` iterations from ``start`` on, an engine-independent pass over this
rank's positions forms each exit wave ``ψ_j = P_j·O_j`` (the sub-pixel-shifted probe, as
the engines form it), propagates it, applies the measured modulus and propagates back to
the corrected wave ``ψ'_j``. A small move ``δ`` of position j changes the exit wave by
``δ·P_j ∂O_j``, so the least-squares move along each axis is

    δ = Σ Re(conj(P_j ∂O_j) (ψ'_j − ψ_j)) / (Σ |P_j ∂O_j|² + λ),

with central differences for ∂O and λ a small fraction of the scan's mean denominator. The
moves are scaled by ``step``; while a position's move points the way its previous one did,
a ``momentum`` fraction of that one is added (the object adapts to the wrong positions, so
each least-squares move falls short, consistently; a reversal drops the memory, as
Pty-Chi's and Tike's accelerated position updates do). Moves are limited to ``max_shift``
per update and their global mean is removed (a common shift of all positions is an
ambiguity of ptychography, taken up by the object). The moves' linear part over the scan
(scale, rotation, shear: the moves ≈ the centred input positions times a 2 x 2 matrix, one
small allreduce) is taken out before the per-position gains, and moves as one with its own
momentum: the adaptive gains cut each position's noisy move, and with it the small,
coherent share of a scan-wide distortion, which then converges slowly. From an engine's
residuals (LSQML, DM's LSQML refinement) that part moves instead by the Gauss-Newton step
along the object-position valley (:meth:`PositionRefiner._valley_step`,
:func:`ptychompi.ops.steps.valley_equations`): positions and object moved together by the
same linear map change only the object's scale, rotation and shear within each frame, which
the data see directly, while the positions moved alone are held by an object that has
absorbed the distortion. A curved probe (its quadratic phase :data:`VALLEY_CURVED` waves or
more at its RMS radius) trades the scan's scale and shear against its defocus and
astigmatism, so the data determine them weakly (the valley followed that trade, and the
moves' fit went astray on focused beams): there, without ``affine``, the scan keeps its
input's scale and shear (the symmetric share of the moves' fit is dropped) and only the
rotation, which no aberration of a round beam mimics, steps; with ``affine`` (a stage error
declared) the whole part steps by the moves' fit. With ``affine`` the positions are then
fitted by one global transform of the input positions (scale, rotation, shear, offset: 6
parameters whose normal equations are one small allreduce) and become that transform plus a
residual limited to ``max_residual``. Every position stays within ``max_total`` (per axis)
of its input plus the positions' common offset (the re-centring below moves it; within
``DRIFT_PX``: a position whose error is near ``max_total`` is not held short by that
drift); the tiles are grown by that margin (:func:`padded_tiles`), so windows never leave
their tile and the halos hold every pixel two tiles' windows can share: with
``share_frequency: 1`` n ranks follow one rank.

Placement (:func:`placement_config`): rounded to the engines' sub-pixel bins, positions
that cross a bin edge at every update move the model by a whole bin, and the object does
not settle. ePIE places refined positions exactly (it shifts the probe per position
anyway); LSQML (also DM's refinement) in bins of ``1/BETWEEN_BINS`` px with each position's
remainder past its bin applied to first order (``between_bins``:
:meth:`ptychompi.ops.steps.Operations.between_bin_probes`), so the model follows every
position continuously for one inverse FFT per position (three per bin with the array
operations) where exact placement takes two (the shift and the back-shift);
``subpixel_bins: 0`` places them exactly there too. DM's own iterations keep their bins.

With ``centre_probe`` the probe is pinned (:func:`probe_centroid`). Probe and object
shifted together by ``s`` against fixed positions give every exit wave shifted by ``s`` in
its frame (``P(r−s) O(r−s+x_j) = ψ_j(r−s)``), a phase ramp in the detector plane: the same
intensities. The removed mean of the moves pins the positions' mean and leaves that slide
free, and while the positions are wrong the probe slides (a few tenths of a pixel), so the
object ends up shifted against the positions by an arbitrary sub-pixel amount. After each
update the probe is shifted back to the intensity centroid it started with (``−d``,
exactly, by a Fourier ramp) and every position by ``+d``, which keeps every exit wave's
intensities (``P(r+d) O(r+d+x_j) = ψ_j(r+d)``): the slide goes into the positions' common
offset (itself an ambiguity). ``d`` is computed from the probe every rank holds, summed
over the ranks, so all ranks (and one rank) move alike. Engines that keep exit waves
between iterations (DM before its refinement) are not re-centred: their waves would have to
move too."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import AlgorithmConfig, PositionCorrectionConfig
from ..model.physics import subpixel_ramps
from ..ops import PositionJob
from ..ops.steps import central_differences, valley_equations
from ..parallel.tiling import Box, Tile, decompose
from .position_guard import MisfitGuard

if TYPE_CHECKING:
    from .base import Engine

DAMPING = 0.05  # λ relative to the scan's mean denominator per axis
DEFAULT_EVERY = 4  # update_every null: iterations between updates that need a pass
# adapted_gain's (growth, cut, floor): updates after every iteration from the engine's own
# residuals (LSQML), and milder for updates every few iterations from a pass of their own
# (ePIE): fewer updates, each after the object has changed more
GAINS_EACH = (1.2, 0.6, 0.05)
GAINS_PASS = (1.5, 0.7, 0.3)
SETTLE_WINDOW = 5  # iterations over which settled() averages the error's fall
BETWEEN_BINS = 4  # LSQML's sub-pixel bins per px with positions between them (placement_config)
DRIFT_PX = 1  # the positions' common offset may leave their inputs by this much beyond max_total
# the valley's Gauss-Newton step is taken by halves: the object, which is not warped with
# the positions, follows within a few iterations instead of the misfit jumping
VALLEY_STEP = 0.5
VALLEY_DAMPING = 1e-6  # the valley's normal equations' Tikhonov term, of their mean diagonal
# a probe with at least this phase curvature (waves at its RMS radius; a pinhole's Fresnel
# fringes a few hundredths, a defocused zone plate's beam a good part of one) trades the
# scan's scale and shear against its own defocus and astigmatism: without affine the scan
# keeps its input's scale and shear and only its rotation steps (with affine: the moves' fit)
VALLEY_CURVED = 0.25
SETTLED_PX = 0.01  # moves' RMS per update below which the positions count as settled (moving)


def placement_config(cfg: AlgorithmConfig, engine: str) -> AlgorithmConfig:
    """``cfg`` with ``position_correction.subpixel_bins`` as ``subpixel_bins`` when positions
    are refined (refined positions rounded to bins dither between them, and the object
    follows). By default (null) ePIE places them exactly (it shifts the probe per position
    anyway) and LSQML in bins of ``1/BETWEEN_BINS`` px with positions between them
    (``between_bins``: first order, continuous; coarser bins, fewer transforms). Not for DM's
    own iterations (its exact placement is slower), but for the LSQML refinement it hands
    over to (built from DM's configuration)."""
    pc = cfg.position_correction
    bins = pc.subpixel_bins
    if bins is None and engine == "epie":
        bins = 0
    elif bins is None and engine == "lsqml" and pc.between_bins and cfg.subpixel_bins > 0:
        bins = BETWEEN_BINS
    if not pc.enabled or bins is None or engine == "dm":
        return cfg
    return dataclasses.replace(cfg, subpixel_bins=bins)


def between_bins(cfg: AlgorithmConfig, engine: str) -> bool:
    """Whether ``engine`` places refined positions between its sub-pixel bins
    (:meth:`ptychompi.ops.steps.Operations.between_bin_probes`): LSQML (also DM's
    refinement). Not DM's own iterations, whose probe update takes one probe per run of
    equal shift, nor ePIE, which shifts the probe per position anyway (exact while refining:
    :func:`placement_config`)."""
    pc = cfg.position_correction
    return bool(pc.enabled and pc.between_bins and cfg.subpixel and cfg.subpixel_bins > 0
                and engine == "lsqml")


def margin_px(cfg: PositionCorrectionConfig) -> int:
    """Pixels the tiles grow by on each side: the largest move (``max_total`` about the
    common offset, which may drift by ``DRIFT_PX``) plus one (a sub-pixel remainder may round
    up to a whole pixel)."""
    return int(math.ceil(cfg.max_total)) + DRIFT_PX + 1 if cfg.enabled else 0


def padded_tiles(positions_px: np.ndarray, frame: int, size: int,
                 grid: tuple[int, int] | None, margin: int,
                 object_shape: tuple[int, int]) -> list[Tile]:
    """:func:`decompose` of windows grown by ``margin`` on each side, boxes and halos cut to
    the object: every window a position can move to (within ``margin - 1``) stays in its tile,
    and every pixel two tiles' windows can share lies in their halo. The same split of the
    positions as without the margin."""
    pos = np.asarray(positions_px, np.float64).reshape(-1, 2)
    tiles = decompose(pos - margin, (frame + 2 * margin, frame + 2 * margin), size, grid)
    whole = Box(0, 0, int(object_shape[0]), int(object_shape[1]))
    for tile in tiles:
        tile.box = tile.box.intersect(whole) or tile.box
        halos = {n: h.intersect(whole) for n, h in tile.halos.items()}
        tile.halos = {n: h for n, h in halos.items() if h is not None}
        tile.neighbours = sorted(tile.halos)
    return tiles


def probe_centroid(backend: Any, probe: Any) -> np.ndarray:
    """``[Σ I·row, Σ I·col, Σ I]`` of the probe's intensity ``I = Σ_k |P_k|²`` (frame
    pixels, float64 on the host): summed over ranks, the centroid is the first two over the
    third."""
    xp = backend.xp
    power = (xp.abs(probe) ** 2).sum(axis=0).astype(np.float64)
    rows, cols = power.sum(axis=1), power.sum(axis=0)
    return np.array([float((rows * xp.arange(len(rows))).sum()),
                     float((cols * xp.arange(len(cols))).sum()), float(rows.sum())])


def probe_curvature_waves(backend: Any, probe: Any) -> float:
    """The probe's quadratic phase at its RMS radius, in waves (signed): its first mode's
    phase gradient fitted, weighted by intensity, as ``2 b r`` plus a tilt about its
    intensity centroid; ``b r²/(2π)`` at the intensity-weighted ``r²``. About the centroid
    the tilt drops out of the normal equations: ``b = Σ r·|P|²∇φ / (2 Σ |P|² r²)``."""
    p = np.asarray(backend.asnumpy(probe[0]), np.complex128)
    power = np.abs(p) ** 2
    total = power.sum()
    if not np.isfinite(total) or total <= 0:
        return 0.0
    y, x = np.ogrid[:p.shape[0], :p.shape[1]]
    y = y - (power.sum(axis=1) * y[:, 0]).sum() / total
    x = x - (power.sum(axis=0) * x[0]).sum() / total
    g_row, g_col = np.gradient(p)
    flux = (y * np.imag(np.conj(p) * g_row) + x * np.imag(np.conj(p) * g_col)).sum()  # r·|P|²∇φ
    # b = flux / (2 Σ|P|² r²), and the phase at the RMS radius b Σ|P|² r² / Σ|P|²
    return float(flux / (4 * np.pi * total))


def shifted_probe(backend: Any, probe: Any, shift: np.ndarray) -> Any:
    """``probe`` moved by ``shift`` (rows, cols) px through a Fourier phase ramp (exact,
    periodic in the frame), in the probe's precision."""
    ramp_r, ramp_c = subpixel_ramps(backend, np.asarray(shift, np.float64).reshape(1, 2),
                                    probe.shape[-1])
    spec = backend.fft2(probe)
    spec *= ramp_r[0][:, None] * ramp_c[0][None, :]
    return backend.ifft2(spec, overwrite=True).astype(probe.dtype)


def affine_terms(initial: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The normal equations (15 numbers: X^T X, 3 x 3, then X^T Y, 3 x 2) of the fit
    ``current ≈ [initial, 1] @ T`` over these positions; summed over ranks, they give the
    global fit."""
    x = np.concatenate([initial, np.ones((len(initial), 1))], axis=1)
    return np.concatenate([(x.T @ x).reshape(-1), (x.T @ current).reshape(-1)])


def solve_affine(terms: np.ndarray) -> np.ndarray:
    """The 3 x 2 transform ``T`` (rows: the row and column coefficients, then the offset) of
    :func:`affine_terms` summed over the scan; the identity when they do not determine it."""
    xtx, xty = terms[:9].reshape(3, 3), terms[9:].reshape(3, 2)
    identity = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    if not np.all(np.isfinite(terms)) or np.linalg.matrix_rank(xtx) < 3:
        return identity
    return np.linalg.solve(xtx, xty)


def settled(errors: Sequence[float], rate: float | None, window: int = SETTLE_WINDOW) -> bool:
    """Whether the engine's model has formed: its error (one per iteration so far) has at
    some point fallen by less than ``rate`` per iteration, on average over ``window``
    iterations (always, with ``rate`` None). While the object and probe still form, the
    misfit reflects them more than the positions, and moves made then drift (also from true
    positions) into a wrong state that object and positions share. A function of the
    errors alone: every rank agrees, and a resumed run reopens it as the run did."""
    if rate is None:
        return True
    e = np.asarray(errors, np.float64)
    if len(e) <= window:
        return False
    return bool(np.any(e[window:] >= e[:-window] * (1.0 - rate) ** window))


def adapted_gain(gain: np.ndarray, move: np.ndarray, previous: np.ndarray,
                 factors: tuple[float, float, float] = GAINS_EACH) -> np.ndarray:
    """Each position's step factor per axis after a least-squares ``move``: cut when it
    reverses the ``previous`` move (down to a floor), grown (up to 1) when it follows it, as
    Rprop's (``factors``: growth, cut, floor). Near the optimum the estimates are noise
    (photon noise, the object's own errors) and reverse about every other update, so the
    steps shrink and the positions settle instead of wandering with the object; a real error
    keeps its direction and its full step."""
    grow, cut, floor = factors
    product = move * previous
    out = np.where(product < 0, np.maximum(gain * cut, floor), gain)
    return np.where(product > 0, np.minimum(out * grow, 1.0), out)


class PositionRefiner:
    """One rank's refinement state: the input and current positions of its frames."""

    def __init__(self, cfg: PositionCorrectionConfig, positions: np.ndarray,
                 origin: tuple[int, int], box_shape: tuple[int, int], frame: int) -> None:
        self.cfg = cfg
        self.initial = np.array(positions, np.float64).reshape(-1, 2)
        self.origin = np.asarray(origin, np.float64)
        # a window's corner floor(p) stays in [0, box - frame]
        self.high = np.asarray(box_shape, np.float64) - frame + 1 - 1e-6
        # the last affine fit (3 x 2, global object pixels: refined ≈ [input, 1] @ T)
        self.transform: np.ndarray | None = None
        # each position's last move (momentum; with affine, less the scan's linear part)
        self.velocity = np.zeros_like(self.initial)
        # with affine: the last move's linear part (2 x 2, :meth:`_split_linear`), the inputs
        # about their global mean
        self.linear_velocity = np.zeros((2, 2))
        self._centred: np.ndarray | None = None
        self._radius: float | None = None  # the largest |_centred| over all ranks
        self.last_move = np.zeros_like(self.initial)  # the last update's moves (moving())
        self._moving: bool | None = None  # moving()'s answer for the current moves
        self.gain = np.ones_like(self.initial)  # each position's step factor per axis
        # sums an engine handed over during a due iteration (:meth:`collect`), per position
        self._sums = np.zeros((len(self.initial), 4))
        # the normal equations' terms of the scan's linear mode along the object-position
        # valley (:func:`ptychompi.ops.steps.valley_terms`) from the same residuals, summed
        self._valley = np.zeros(13)
        # with the position search due: each position's Σ|χ|² (its misfit, up to the
        # transform's scale) and the iteration it was collected in
        self._power = np.zeros(len(self.initial))
        self._power_iteration = -1
        self._seen = np.zeros(len(self.initial), bool)
        self._armed: Engine | None = None
        self._called = False  # whether the armed engine handed over residuals
        # centre_probe: the probe's intensity centroid at the start (frame pixels)
        self.reference: np.ndarray | None = None
        self._settled = False  # whether the engine's model has formed (:func:`settled`)
        self.guard = None if cfg.guard is None else MisfitGuard(cfg.guard)

    def due(self, iteration: int) -> bool:
        """Whether the positions move after iteration ``iteration`` (0-based): every
        ``update_every`` iterations from ``start``, and (``update_every`` null) after every
        iteration whose engine handed over its residuals (:meth:`collect`: no pass needed)."""
        return self._regular(iteration) or self._called

    def _active(self, iteration: int) -> bool:
        c = self.cfg
        return (self._settled and iteration >= c.start and not self.halted
                and (c.stop is None or iteration < c.stop))

    @property
    def halted(self) -> bool:
        """Whether the misfit guard stopped the refinement (:mod:`.position_guard`)."""
        return self.guard is not None and self.guard.halted

    def _regular(self, iteration: int) -> bool:
        """An update with a pass of its own if the engine hands over nothing."""
        every = DEFAULT_EVERY if self.cfg.update_every is None else self.cfg.update_every
        return self._active(iteration) and (iteration - self.cfg.start) % every == 0

    def moving(self, exchange: Any) -> bool:
        """Whether the last update moved the positions by ``SETTLED_PX`` RMS or more (their
        common shift removed; collective: from the moves every rank holds)."""
        if self._moving is None:  # once per update (the moves change only there)
            v = self.last_move
            sums = exchange.allreduce(np.array([float((v * v).sum()), float(len(v))]))
            self._moving = bool(sums[0] >= SETTLED_PX ** 2 * max(sums[1], 1.0))
        return self._moving

    # ------------------------------------------------------------------ the gradient
    def arm(self, engine: Engine) -> None:
        """Before iteration ``engine.iteration``: when the positions may move after it, ask
        the engine that is refined to hand over its residuals (:meth:`collect`; LSQML does,
        on every rank alike), else ask nothing."""
        if self._armed is not None:
            self._armed.position_collector = None
            self._armed = None
        self._called = False
        self._settled = settled(engine.errors, self.cfg.settle)
        if self.guard is not None:
            current = np.asarray(engine.data.positions, np.float64).reshape(-1, 2)
            back = self.guard.observe(engine.errors, current)
            if back is not None:  # the fit got worse: the positions of the best fit, for good
                engine.move_positions(back)
                self.velocity = np.zeros_like(self.initial)
                self.linear_velocity = np.zeros((2, 2))
                self.last_move, self._moving = np.zeros_like(self.initial), None
        if self.cfg.centre_probe and self.reference is None:
            self.reference = self._centroid(engine)
        it = engine.iteration
        if self._regular(it) or (self.cfg.update_every is None and self._active(it)):
            self._armed = engine.refined_by()
            self._armed.position_collector = self
            self._seen[:] = False
            self._sums[:] = 0.0
            self._valley[:] = 0.0

    def collect(self, engine: Engine, members: np.ndarray, size: int,
                chunks: list[tuple[np.ndarray, Any]]) -> None:
        """The per-position sums of a batch from residuals the engine formed: ``chunks[t]``
        = (sums, χ) of ``members[t * size:(t + 1) * size]``, the sums (B, 17) those of
        :meth:`Operations.residual_refinement_sums` of χ against ``engine.object`` as it
        stands (the batch's object, before its step), which the engine took in the pass that
        formed χ. Called for every batch on every rank, also with no members."""
        self._called = True
        power = self._search_due(engine.iteration)
        if power and self._power_iteration != engine.iteration:
            self._power[:] = np.nan
            self._power_iteration = engine.iteration
        if not len(members):
            return
        sums = np.concatenate([c[0] for c in chunks])
        self._sums[members] = sums[:, :4]
        self._seen[members] = True
        self._valley += sums[:, 4:].sum(axis=0)
        if power:  # Σ|χ|² per position, for the search's candidates
            xp = engine.backend.xp

            def misfit(_: int, sl: slice) -> np.ndarray:
                chi = chunks[sl.start // size][1]
                return np.asarray(engine.backend.asnumpy(
                    (xp.abs(chi) ** 2).sum(axis=(1, 2, 3), dtype=np.float64)), np.float64)

            self._power[members] = np.concatenate(engine.map_chunks(misfit, len(members), size))

    def _search_due(self, iteration: int) -> bool:
        """Whether the position search runs after this iteration's update."""
        if self.cfg.search_every is None:
            return False
        from .position_search import search_due  # noqa: PLC0415 (imports this module)
        return search_due(self.cfg, iteration)

    def residual_misfits(self, iteration: int) -> np.ndarray | None:
        """Each position's ``Σ|χ|²`` from the residuals the engine handed over in
        ``iteration`` (the search's candidates need no pass of their own), or None when
        they were not collected for every position."""
        if self._power_iteration != iteration or not np.all(np.isfinite(self._power)):
            return None
        return self._power.copy()

    def collect_sums(self, members: np.ndarray, sums: np.ndarray) -> None:
        """Per-position sums (B, 4: as :meth:`collect` forms them) an engine computed itself
        for ``members`` (ePIE: each against the object as it stood at the position's visit).
        Called once per iteration on every rank, also with no members."""
        self._called = True
        if len(members):
            self._sums[members] = sums
            self._seen[members] = True

    def _collected(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The sums :meth:`collect` gathered this iteration (a position the engine did not
        visit does not move), or None when it was not called."""
        armed, called = self._armed, self._called
        self._armed, self._called = None, False
        if armed is not None:
            armed.position_collector = None
        if not called:
            return None
        return self._sums[:, 0::2].copy(), self._sums[:, 1::2].copy()

    def misfit_terms(self, engine: Engine) -> tuple[np.ndarray, np.ndarray]:
        """Per position and axis, the numerator and denominator of the least-squares move
        (n, 2) each, from one pass over this rank's positions in chunks."""
        engine = engine.refined_by()
        be, xp = engine.backend, engine.backend.xp
        obj = engine.object
        d_row, d_col = central_differences(xp, obj)
        probe_ft = be.fft2(engine.probe) if engine.use_subpixel else None
        n = len(engine.rows)

        def part(_: int, sl: slice) -> tuple[np.ndarray, np.ndarray]:
            probes, probe_of = engine.probe_set(sl, probe_ft)
            sums = be.ops.position_chunk(PositionJob(
                amplitudes=engine.data.amplitudes, frames=np.arange(sl.start, sl.stop),
                win=engine.windows(sl), obj=obj, probes=probes, probe_of=probe_of,
                d_row=d_row, d_col=d_col, prop=engine.data.propagator))
            return sums[:, 0::2], sums[:, 1::2]

        parts = engine.map_chunks(part, n) if n else []
        if not parts:
            return np.zeros((0, 2)), np.zeros((0, 2))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    # ------------------------------------------------------------------ one update
    def update(self, engine: Engine) -> None:
        """Move this rank's positions (collective: every rank calls it at the same point)."""
        c, ex = self.cfg, engine.exchange
        current = np.asarray(engine.data.positions, np.float64).reshape(-1, 2)
        collected = self._collected()
        num, den = collected if collected is not None else self.misfit_terms(engine)
        n = len(current)
        # one collective: the denominators' sums, the valley's terms (from residuals) and
        # the probe's curvature (every rank decides alike)
        curvature = probe_curvature_waves(engine.backend, engine.probe)
        sums = ex.allreduce(np.array([*den.sum(axis=0), float(n), *self._valley, curvature,
                                      1.0]))
        damping = DAMPING * sums[:2] / max(sums[2], 1.0)
        raw = num / (den + damping + 1e-30)
        flat = abs(sums[16] / sums[17]) < VALLEY_CURVED
        # a curved beam trades the scan's scale and shear against its defocus and astigmatism:
        # without affine they stay the input's, and only the rotation steps
        rotation_only = not flat and not c.affine
        valley = (self._valley_step(sums[3:16], rotation_only)
                  if collected is not None and (flat or rotation_only) else None)
        own, linear = self._split_linear(raw, ex)
        if rotation_only:
            linear = 0.5 * (linear - linear.T)
        if c.adaptive_step:  # per position and axis: a reversal cuts its step
            factors = GAINS_EACH if collected is not None else GAINS_PASS
            self.gain = adapted_gain(self.gain, own, self.velocity, factors)
        move = c.step * self.gain * own
        if c.momentum > 0:  # a steady direction speeds up; a reversal starts afresh
            agree = (move * self.velocity).sum(axis=1) > 0
            move[agree] += c.momentum * self.velocity[agree]
        if valley is not None:  # the scan's linear part: the valley's Gauss-Newton step
            linear = self.linear_velocity = self._limited(valley, ex)
        else:  # the scan's linear part: one step, its own momentum
            linear = c.step * linear
            if c.momentum > 0 and (linear * self.linear_velocity).sum() > 0:
                linear += c.momentum * self.linear_velocity
            self.linear_velocity = linear
            move += self._centred @ linear
        length = np.hypot(move[:, 0], move[:, 1])
        too_far = length > c.max_shift
        move[too_far] *= (c.max_shift / length[too_far])[:, None]
        if valley is not None:  # limited as a whole (:meth:`_limited`), not per position
            move += self._centred @ linear
        mean = ex.allreduce(np.array([*move.sum(axis=0), float(n)]))
        move -= mean[:2] / max(mean[2], 1.0)
        self.last_move, self._moving = move, None
        self.velocity = move - self._centred @ linear
        moved = current + move
        if self.reference is not None and getattr(engine, "waves", None) is None:
            moved += self._recentre(engine)
        if c.affine:
            moved = self._affine(moved, ex)
        moved = self.initial + self._within(moved - self.initial, ex)
        moved = np.clip(moved, 0.0, self.high)
        engine.move_positions(moved)
        if self.guard is not None:
            self.guard.moved(engine.iteration)
        if self.cfg.search_every is not None:  # stuck positions (position_search.py)
            from .position_search import maybe_search  # noqa: PLC0415 (imports this module)
            maybe_search(self, engine)

    def _split_linear(self, raw: np.ndarray, ex: Any) -> tuple[np.ndarray, np.ndarray]:
        """``raw`` moves as each position's own part and the scan's linear part (2 x 2: the
        moves ≈ :attr:`_centred` @ it, the input positions about their global mean; fitted
        over all ranks' positions by one allreduce)."""
        if self._centred is None:
            g = self.initial + self.origin
            total = ex.allreduce(np.array([*g.sum(axis=0), float(len(g))]))
            self._centred = g - total[:2] / max(total[2], 1.0)
        x = self._centred
        terms = ex.allreduce(np.concatenate([(x.T @ x).ravel(), (x.T @ raw).ravel()]))
        xtx, xty = terms[:4].reshape(2, 2), terms[4:].reshape(2, 2)
        if not np.all(np.isfinite(terms)) or np.linalg.matrix_rank(xtx) < 2:
            return raw, np.zeros((2, 2))
        linear = np.linalg.solve(xtx, xty)
        return raw - x @ linear, linear

    @staticmethod
    def _valley_step(terms: np.ndarray, rotation_only: bool = False) -> np.ndarray | None:
        """The scan's linear part of the moves (2 x 2, as :meth:`_split_linear`'s) from the
        valley's terms summed over all ranks (13), or (``rotation_only``) its rotation alone;
        None when the equations are empty or singular (an engine that handed over no valley
        terms: ePIE's residuals)."""
        gram, num = valley_equations(terms)
        scale = np.trace(gram) / 4.0
        if not np.all(np.isfinite(terms)) or scale <= 0:
            return None
        if rotation_only:  # E = θ [[0, -1], [1, 0]] (index 2a + b): one Gauss-Newton unknown
            turn = np.array([0.0, -1.0, 1.0, 0.0])
            step = turn * (turn @ num) / (turn @ gram @ turn + VALLEY_DAMPING * scale)
            return VALLEY_STEP * step.reshape(2, 2).T
        step = np.linalg.solve(gram + VALLEY_DAMPING * scale * np.eye(4), num)
        # moves = centred @ it; step[2a + b]: axis a moves per unit of axis b
        return VALLEY_STEP * step.reshape(2, 2).T

    def _limited(self, linear: np.ndarray, ex: Any) -> np.ndarray:
        """``linear`` scaled down so that no position's share of it exceeds ``max_shift``
        (the largest distance of an input from the scan's centre: one allreduce, once)."""
        if self._radius is None:
            local = np.hypot(*self._centred.T).max() if len(self._centred) else 0.0
            self._radius = float(ex.allreduce(np.array([local]), op="max")[0])
        largest = np.linalg.norm(linear, 2) * self._radius
        return linear * min(1.0, self.cfg.max_shift / largest) if largest > 0 else linear

    def _within(self, dev: np.ndarray, ex: Any) -> np.ndarray:
        """Each position's distance ``dev`` from its input, within ``max_total`` (per axis) of
        the positions' common offset (an ambiguity that the probe's re-centring moves), that
        offset within ``DRIFT_PX``; a position inside both keeps ``dev`` as it is."""
        limit = self.cfg.max_total
        total = ex.allreduce(np.array([*dev.sum(axis=0), float(len(dev))]))
        common = total[:2] / max(total[2], 1.0)
        held = np.clip(common, -DRIFT_PX, DRIFT_PX)
        own = dev - common
        inside = (np.abs(own) <= limit) & np.all(held == common)
        return np.where(inside, dev, held + np.clip(own, -limit, limit))

    @staticmethod
    def _centroid(engine: Engine) -> np.ndarray:
        """The probe's intensity centroid (frame pixels), from every rank's probe."""
        sums = engine.exchange.allreduce(probe_centroid(engine.backend, engine.probe))
        return sums[:2] / max(sums[2], 1e-300)

    def _recentre(self, engine: Engine) -> np.ndarray:
        """Shift the probe back to :attr:`reference` by ``−d`` (``d``: how far its centroid
        slid) and return ``d``, the move of every position that keeps the exit waves'
        intensities (module docstring)."""
        d = self._centroid(engine) - self.reference
        if not np.all(np.isfinite(d)) or np.abs(d).max() < 1e-4:
            return np.zeros(2)
        engine.probe = shifted_probe(engine.backend, engine.probe, -d)
        return d

    def _affine(self, moved: np.ndarray, ex: Any) -> np.ndarray:
        """``moved`` as the global transform of the input positions plus a residual."""
        initial = self.initial + self.origin  # global pixels: one transform for all ranks
        terms = ex.allreduce(affine_terms(initial, moved + self.origin))
        self.transform = solve_affine(terms)
        model = np.concatenate([initial, np.ones((len(initial), 1))], axis=1) @ self.transform
        model -= self.origin
        limit = self.cfg.max_residual
        if limit is None:
            limit = self.cfg.max_total
        return model + np.clip(moved - model, -limit, limit)

    # ------------------------------------------------------------------ checkpoints
    def state(self, engine: Engine) -> dict[str, np.ndarray]:
        """The current positions (tile-local) for a checkpoint, and the last affine fit."""
        out = {"positions": np.array(engine.data.positions, np.float64),
               "position_velocity": self.velocity.copy(), "position_gain": self.gain.copy(),
               "position_linear_velocity": self.linear_velocity.copy(),
               "position_last_move": self.last_move.copy()}
        if self.transform is not None:
            out["position_transform"] = self.transform.copy()
        if self.reference is not None:
            out["probe_reference"] = self.reference.copy()
        if self.guard is not None:
            out.update(self.guard.state())
        return out

    def restore(self, engine: Engine, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state`'s output."""
        transform = state.get("position_transform")
        self.transform = (None if transform is None
                          else np.asarray(transform, np.float64).reshape(3, 2))
        reference = state.get("probe_reference")
        if reference is not None:
            self.reference = np.asarray(reference, np.float64).reshape(2)
        gain = state.get("position_gain")
        self.gain = (np.ones_like(self.initial) if gain is None
                     else np.asarray(gain, np.float64).reshape(-1, 2))
        velocity = state.get("position_velocity")
        self.velocity = (np.zeros_like(self.initial) if velocity is None
                         else np.asarray(velocity, np.float64).reshape(-1, 2))
        linear = state.get("position_linear_velocity")
        self.linear_velocity = (np.zeros((2, 2)) if linear is None
                                else np.asarray(linear, np.float64).reshape(2, 2))
        last = state.get("position_last_move")
        self.last_move = (self.velocity.copy() if last is None
                          else np.asarray(last, np.float64).reshape(-1, 2))
        self._moving = None
        if self.guard is not None:
            self.guard.restore(state)
        if "positions" in state:
            engine.move_positions(np.asarray(state["positions"], np.float64))

def make_refiner(cfg: PositionCorrectionConfig, positions: np.ndarray, origin: tuple[int, int],
                 box_shape: tuple[int, int], frame: int,
                 engine: str = "") -> PositionRefiner | None:
    """The refiner of ``engine`` when ``cfg.enabled``, else None; ``centre_probe`` null
    resolved: every engine but ePIE (its positions placed exactly, no bin edge cares where
    the probe sits; the probe's re-centring only perturbs its path)."""
    if not cfg.enabled:
        return None
    if cfg.centre_probe is None:
        cfg = dataclasses.replace(cfg, centre_probe=engine != "epie")
    return PositionRefiner(cfg, positions, origin, box_shape, frame)

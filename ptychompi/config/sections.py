"""The configuration's sections as dataclasses: every key declared once with its type,
default, allowed values or range and help text (:func:`~ptychompi.config.fields.opt`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import yaml

from .engines import (
    ENGINE_OPTIONS,
    DMOptions,
    EPIEOptions,
    LSQMLOptions,
)
from .fields import opt


@dataclass
class FollowConfig:
    enabled: bool = opt(False, "reconstruct while APS row files (or a CXI file under SWMR) "
                        "are written (= run --follow; the planned scan from data.scan_dims, "
                        "n_frames or mda_file)")
    timeout_s: float = opt(120.0, "no new complete row for this long: the scan is taken as "
                           "ended (aborted) and the rest runs on the rows that arrived",
                           low=0.0)
    poll_s: float = opt(0.5, "seconds between looks at the row files; a row is used once its "
                        "file opens and its size stays the same over one look", low=0.01)
    final_iterations: int | None = opt(None, "iterations kept for after the last row (null "
                                       "= a third of algorithm.iterations)", low=0)
    schedule: list[list[int]] | None = opt(None, "replay the [iteration, rows] decisions of "
                                           "an earlier follow run (its result's provenance "
                                           "follow/schedule): tests, benchmarks")


@dataclass
class DataConfig:
    path: str | None = opt(None, "scan file: CXI, or the first APS row file / its printf pattern")
    format: str = opt("auto", "file layout", choices=("auto", "cxi", "aps"))
    dataset: str = opt("/entry/data/data", "APS: dataset holding the frames in each file")
    first_index: int = opt(1, "APS: index of the first row file in the pattern", low=0)
    frames_per_file: int | None = opt(None, "APS: frames per row file (null = from the files)",
                                      low=1)
    n_frames: int | None = opt(None, "use only the first N frames (null = all)", low=1)
    positions: str = opt("auto", "where positions come from",
                         choices=("auto", "file", "raster", "spiral", "mda"))
    position_file: str | None = opt(None, "CSV of positions in metres, row then column")
    scan_dims: list[int] | None = opt(None, "raster/spiral: [rows, columns] of the scan")
    step_m: list[float] | None = opt(None, "raster/spiral: [row, column] step in metres")
    mda_file: str | None = opt(None, "EPICS MDA file with the scan's positioners")
    mda_pv_map: dict | None = opt(None, "map of parameter -> list of MDA PV names")
    follow: FollowConfig = opt(None, "reconstruct while the scan is written",
                               factory=FollowConfig)


@dataclass
class GeometryConfig:
    energy_kev: float | None = opt(None, "photon energy in keV (null = from the file)", low=0.0)
    distance_m: float | None = opt(None, "sample-detector distance (null = from the file)",
                                   low=0.0)
    detector_pixel_m: float | None = opt(None, "detector pixel size (null = from the file)",
                                         low=0.0)
    propagation: str = opt("farfield", "propagation model", choices=("farfield", "nearfield"))
    focus_to_sample_m: float | None = opt(
        None, "near field, cone beam: focus-sample distance (null = parallel beam)", low=0.0)
    flip_positions: list[bool] = opt(None, "flip [rows, columns] of the positions",
                                     factory=lambda: [False, False])
    transpose_positions: bool = opt(False, "swap the row and column of each position")
    object_margin_px: int = opt(8, "object pixels added around the scanned area", low=0)


@dataclass
class PreprocessConfig:
    crop_size: int | None = opt(None, "crop a size x size window (null = keep the frame)", low=2)
    center: list[int] | None = opt(None, "crop centre [row, col]; null = centre of mass")
    rotate90: int = opt(0, "rotate frames by this many 90 degree steps", low=0, high=3)
    flip_rows: bool = opt(False, "flip frames upside down")
    flip_cols: bool = opt(False, "flip frames left-right")
    transpose: bool = opt(False, "transpose frames")
    threshold: float = opt(0.0, "values below -> 0, others minus the threshold", low=0.0)
    bit_depth: int | None = opt(None, "detector bit depth: saturated pixels are masked", low=1)
    beamstop_mask: str | None = opt(None, ".npy/.h5 boolean file, True = blocked pixel")
    binning: int = opt(1, "sum bins of b x b pixels", low=1)
    invalid: str = opt("error", "NaN/negative intensities", choices=("error", "zero", "mask"))
    amplitudes: bool = opt(False, "the file holds amplitudes (sqrt of intensity)")


@dataclass
class PositionCorrectionConfig:
    enabled: bool = opt(False, "refine the scan positions from the data misfit (all engines)")
    start: int = opt(1, "first iteration that moves positions (early: what the object and "
                     "probe learn from wrong positions stays with them for long)", low=0)
    settle: float | None = opt(0.02, "positions move only once the engine's error has "
                               "fallen by less than this fraction per iteration (mean over 5 "
                               "iterations; before, the misfit is the forming object and "
                               "probe's, and moves drift); null = from start", low=0.0,
                               high=1.0)
    stop: int | None = opt(None, "iteration from which positions stay where they are "
                           "(null = never)", low=0)
    guard: float | None = opt(0.1, "once positions have moved for 5 iterations, if each of "
                              "the engine's last 5 errors exceeds its best by more than this "
                              "fraction, the refinement stops for the run and the positions "
                              "return to those of the best error (null = never)", low=0.0)
    update_every: int | None = opt(None, "iterations between position updates (null = after "
                                   "every iteration of LSQML, DM's LSQML refinement and, with "
                                   "epie_residuals, ePIE, whose residuals give the update, "
                                   "else every 4th: a pass of its own costs about an LSQML "
                                   "iteration's FFTs)", low=1)
    epie_residuals: bool = opt(False, "with update_every null, ePIE's updates come from the "
                               "residuals of its own visits, after every iteration (false: "
                               "a pass of the refiner's own every 4th iteration, which ended "
                               "closer on scans it was not tuned on)")
    step: float = opt(3.0, "multiple of each position's least-squares shift applied (the "
                      "object adapts to wrong positions, so the plain shift falls short)",
                      low=0.0)
    adaptive_step: bool = opt(True, "each position's step is cut when its move reverses "
                              "and grows back while it keeps its direction (noise-driven "
                              "moves die out; false = the full step for every move)")
    max_shift: float = opt(0.5, "largest move of a position in one update, px", low=0.0)
    momentum: float = opt(0.8, "fraction of a position's previous move added to its next one "
                          "while the two point the same way (0 = none)", low=0.0, high=0.99)
    max_total: float = opt(4.0, "largest distance of a position from its input, px per axis "
                           "(the tiles grow by this much so windows stay inside them)",
                           low=0.0, high=64.0)
    affine: bool = opt(False, "a stage scale/rotation/shear error: fit scale, rotation, shear "
                       "and offset over all positions each update (positions = the fitted "
                       "transform of the input + a residual), and with a curved beam let the "
                       "moves' scan-wide scale and shear step (without affine a curved beam "
                       "keeps the input's, which it trades against its defocus, and only the "
                       "rotation steps; a flat beam steps all of the linear part anyway: by the "
                       "moves' fit in ePIE, along the object-position valley in LSQML and DM) "
                       "(weakly determined with strongly focused beams and at low dose)")
    max_residual: float | None = opt(None, "affine: largest residual from the fitted "
                                     "transform, px per axis (null = max_total)", low=0.0)
    subpixel_bins: int | None = opt(None, "algorithm.subpixel_bins while positions are "
                                    "refined (0 = exact: refined positions rounded to bins "
                                    "dither between them, and the object follows; LSQML "
                                    "costs more); null = ePIE exact, LSQML (and DM, which "
                                    "refines as LSQML) 4 with between_bins, else "
                                    "algorithm.subpixel_bins", low=0)
    between_bins: bool = opt(True, "with sub-pixel bins, a position between them sees its "
                             "bin's shifted probe moved on to it to first order (P - d.grad P, "
                             "the gradient by Fourier): the model follows the position "
                             "continuously (a CPU: one inverse FFT per position; a GPU: two "
                             "more shifted probes per bin) (false: rounded to the bin, which "
                             "refined positions dither across)")
    centre_probe: bool | None = opt(None, "after each update shift the probe back to its "
                                    "starting intensity centroid and all positions with it "
                                    "(probe and object may slide together against the "
                                    "positions: an ambiguity the moves' removed mean leaves "
                                    "free); null = every engine but ePIE (placed exactly, it "
                                    "ends closer to the truth with the probe left free)")
    search_every: int | None = opt(10, "iterations between searches for stuck positions: "
                                   "a position whose data misfit exceeds 2 x the scan's "
                                   "median tries every whole-pixel offset within "
                                   "search_radius and moves to the best one when it fits "
                                   "clearly better (null = never)", low=1)
    search_radius: int = opt(3, "the search's reach, px per axis (within max_total of the "
                             "input)", low=1, high=16)


@dataclass
class AlgorithmConfig:
    name: str = opt("dm", "reconstruction engine (its options: the section of that name)",
                    choices=tuple(ENGINE_OPTIONS))
    iterations: int = opt(100, "iterations to run", low=0)
    probe_modes: int = opt(1, "incoherent probe modes", low=1)
    probe_update_start: int = opt(0, "first iteration that updates the probe", low=0)
    batch_size: int | None = opt(None, "positions per batch (null = engine default: ePIE up to "
                                 "epie.batch non-overlapping windows, LSQML the scan split "
                                 "into lsqml.batches)", low=1)
    seed: int = opt(0, "random seed (position order, batches)", low=0)
    probe_guess: str | None = opt(None, "starting probe: .npy, .h5 or ptychopy .csv")
    object_guess: str | None = opt(None, "starting object: .npy, .h5 or ptychopy .csv")
    probe_diameter_m: float | None = opt(
        None, "nominal beam diameter: the data's mean far-field amplitude is defocused to "
        "this size for the starting probe (null = the diameter the data show, far field)",
        low=0.0)
    object_amplitude_min: float | None = opt(None, "clip object amplitude below", low=0.0)
    object_amplitude_max: float | None = opt(None, "clip object amplitude above", low=0.0)
    subpixel: bool = opt(True, "sub-pixel positions by a Fourier phase ramp on the probe")
    subpixel_bins: int = opt(8, "sub-pixel positions are rounded to 1/this px, so positions "
                             "with the same remainder share one shifted probe and one "
                             "back-shift (DM, LSQML); 0 = exact", low=0)
    precision: str = opt("single", "float precision", choices=("single", "double"))
    position_correction: PositionCorrectionConfig = opt(
        None, "position refinement", factory=PositionCorrectionConfig)
    epie: EPIEOptions = opt(None, "ePIE's options", factory=EPIEOptions)
    dm: DMOptions = opt(None, "difference map's options", factory=DMOptions)
    lsqml: LSQMLOptions = opt(None, "LSQML's options", factory=LSQMLOptions)


@dataclass
class ParallelConfig:
    device: str = opt("auto", "cpu, gpu or auto ($PTYCHOMPI_DEVICE overrides)",
                      choices=("auto", "cpu", "gpu"))
    share_frequency: int = opt(1, "iterations between object halo exchanges (1 = exact)", low=1)
    probe_share_frequency: int = opt(1, "iterations between probe reductions", low=1)
    grid: list[int] | None = opt(None, "process grid [rows, cols] (null = from the scan)")
    cuda_aware: str = opt("auto", "pass GPU buffers to MPI directly",
                          choices=("auto", "yes", "no"))
    workers: int | None = opt(None, "CPU FFT threads per rank (null = cores / ranks)", low=1)
    fft: str = opt("auto", "CPU FFT library: fftw (pyFFTW), scipy, or auto = fftw when "
                   "installed ($PTYCHOMPI_FFT overrides)", choices=("auto", "fftw", "scipy"))
    halo: str = opt("auto", "how LSQML's per-batch halo sums travel: full (the whole halo as "
                    "float32: the least CPU), touched (only the pixels the batch's windows "
                    "touched), compact (touched, each value rounded below 2^-21 of the "
                    "object it moves and Rice-coded: the fewest bytes, the most CPU); auto = "
                    "compact when the ranks span several nodes, full on one node",
                    choices=("auto", "full", "touched", "compact"))
    operations: str = opt("compiled", "how the engines' steps run on a CPU: compiled (numba "
                          "kernels, fused FFTW pipelines) or array (numpy expressions, the "
                          "code a GPU runs: a slower reference to check results against)",
                          choices=("compiled", "array"))


@dataclass
class EmailConfig:
    to: list[str] | None = opt(None, "recipients")
    smtp_host: str = opt("localhost", "SMTP server")
    smtp_port: int = opt(25, "SMTP port", low=1, high=65535)
    starttls: bool = opt(False, "upgrade the connection with STARTTLS")
    username: str | None = opt(None, "SMTP login (null = none)")
    password_env: str | None = opt(None, "environment variable holding the SMTP password")
    sender: str = opt("ptychompi@localhost", "From: address")


@dataclass
class NotifyConfig:
    email: EmailConfig | None = opt(None, "e-mail the summary when a run ends")


@dataclass
class OutputConfig:
    directory: str = opt("out", "where result.h5, logs and exports go")
    checkpoint_every: int = opt(0, "iterations between checkpoints (0 = none)", low=0)
    formats: list[str] = opt(None, "files to write at the end: hdf5, tiff, png, csv",
                             factory=lambda: ["hdf5"], choices=("hdf5", "tiff", "png", "csv"))
    log_every: int = opt(10, "console line every N iterations when not on a terminal", low=1)
    live_every: int = opt(10, "iterations between live snapshots (live/status.json and "
                          "live/snapshot.npz, for the GUI); 0 = none", low=0)
    notify: NotifyConfig = opt(None, "notifications", factory=NotifyConfig)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

"""Options of each engine: the sections ``algorithm.epie``, ``algorithm.dm`` and
``algorithm.lsqml``, and the flat ``algorithm`` keys they replace.

The defaults are the values the engines used as module constants, so a config without these
sections reconstructs bit for bit as before. A flat key (``algorithm.alpha``) still loads into
its section; :func:`move_flat_keys` returns the one deprecation line that says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import ConfigError
from .fields import opt


class ConfigDeprecationWarning(UserWarning):
    """A config used keys that still load but are deprecated (one line, for rank 0)."""


@contextmanager
def config_deprecations() -> Iterator[list[str]]:
    """Collect the deprecation lines of the configs loaded inside, instead of printing them
    (so that a parallel run prints them once, on rank 0); other warnings pass through."""
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigDeprecationWarning)
        yield lines
    for w in caught:
        if issubclass(w.category, ConfigDeprecationWarning):
            lines.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@dataclass
class EPIEOptions:
    alpha: float = opt(1.0, "object step size", low=0.0)
    alpha_final: float = opt(0.3, "the object step falls linearly from alpha to alpha x this "
                             "over the second half of the iterations (1 = constant; smaller "
                             "steps average the noise of more positions)", low=0.0, high=1.0)
    beta: float = opt(0.3, "probe step size", low=0.0)
    beta_initial: float | None = opt(None, "probe step at the first iteration, falling "
                                     "linearly to beta over the first tenth of the iterations "
                                     "(null = beta throughout)", low=0.0)
    rpie_weight: float = opt(0.3, "weight w of the peak power in rPIE's object step "
                             "denominator (1 - w)|P|² + w max|P|² (1 = classic ePIE; smaller: "
                             "larger steps into the beam's tails); the probe step is ePIE's",
                             low=0.0, high=1.0)
    momentum: float = opt(0.7, "friction η of mPIE's object velocity v <- η v + ΔO, ΔO the "
                          "object's change over one pass of the scan", low=0.0, high=0.99)
    momentum_gain: float = opt(0.3, "after each pass the object moves by this x v (mPIE's "
                               "momentum; 0 = none)", low=0.0)
    batch: int = opt(64, "most non-overlapping windows per batch when algorithm.batch_size "
                     "is null (1 = sequential ePIE)", low=1)


@dataclass
class DMOptions:
    overlap_iterations: int = opt(1, "overlap-projection sweeps per iteration (later sweeps "
                                  "reuse the first one's sample-plane exit waves)", low=1)
    fourier_relax: float = opt(1.0, "scale of the power bound where the modulus constraint "
                               "stops (bound_fraction x the Poisson floor x this; 0 = strict)",
                               low=0.0)
    bound_fraction: float = opt(0.15, "the power bound as a fraction of the Poisson floor "
                                "(a bound at the floor stops DM at the first consistent, "
                                "biased object)", low=0.0)
    regularisation: float = opt(1e-3, "δ of the overlap projection's object and probe "
                                "quotients, relative to the largest illumination / object "
                                "power", low=0.0)
    refine_from: int | None = opt(20, "from this iteration on, LSQML's maximum-likelihood "
                                  "updates refine DM's best result (null = never), unless DM "
                                  "still converges far above the noise (refine_noise_ratio)",
                                  low=0)
    refine_noise_ratio: float | None = opt(50.0, "DM goes on past refine_from while its error "
                                           "is above this multiple of the data's Poisson noise "
                                           "floor and falls by more than refine_rate per "
                                           "iteration (high doses, where the noise DM drifts "
                                           "on is still small; null = hand over at refine_from)",
                                           low=0.0)
    refine_rate: float = opt(0.05, "fall of DM's error per iteration (mean over the last 5) "
                             "below which it hands over past refine_from", low=0.0, high=1.0)
    refine_by: float = opt(0.75, "DM hands over at the latest at this fraction of "
                           "algorithm.iterations (or refine_from if later)", low=0.0, high=1.0)
    refine_patience: int | None = opt(5, "refine (as refine_from) as soon as DM's error has "
                                      "set no new low for this many iterations, counted from "
                                      "refine_earliest (null = only from refine_from)", low=1)
    refine_earliest: int = opt(20, "first iteration from which DM's stall is detected and "
                               "its best object kept (its error may rise for a while as it "
                               "searches, early on)", low=1)


@dataclass
class LSQMLOptions:
    noise_model: str = opt("gaussian", "likelihood of the data", choices=("gaussian", "poisson"))
    batches: int = opt(10, "sparse batches per iteration when algorithm.batch_size is null",
                       low=1)
    delta: float = opt(0.1, "object-direction preconditioner δ, relative to the largest "
                       "illumination", low=0.0)
    damping: float = opt(0.1, "λ of each position's step-length system, relative to the "
                         "batch mean of each diagonal", low=0.0)
    step_scale: float = opt(0.9, "factor on each position's optimal object and probe step",
                            low=0.0)
    step_final: float = opt(0.3, "the object step falls linearly from step_scale to "
                            "step_scale x this over the second half of the iterations on noisy "
                            "data (1 = constant; smaller steps average the noise of more "
                            "positions)", low=0.0, high=1.0)
    decay_noise: float = opt(0.02, "the data's Poisson noise level (Σ min(I, 1/4) / Σ I) from "
                             "which the object step falls all the way to step_final; at lower "
                             "levels proportionally less (at high doses convergence, not "
                             "noise, limits the result; 0 = always all the way)", low=0.0)
    probe_relaxation: float = opt(2.0, "probe step along each batch's mean direction, relative "
                                  "to the mean of its positions' optimal steps (over-relaxed: "
                                  "successive batches refine the probe in nearly the same "
                                  "direction)", low=0.0)
    trim: float = opt(0.1, "fraction of the positions' object steps dropped from each side "
                      "before their mean is taken", low=0.0, high=0.49)
    poisson_newton_steps: int = opt(6, "Newton steps of the Poisson exit-wave update per "
                                    "batch", low=1)


#: engine name -> its option section (the section's key in ``algorithm`` is the name)
ENGINE_OPTIONS: dict[str, type] = {"epie": EPIEOptions, "dm": DMOptions, "lsqml": LSQMLOptions}

#: deprecated flat ``algorithm`` key -> (section, key)
FLAT_KEYS: dict[str, tuple[str, str]] = {
    "alpha": ("epie", "alpha"), "beta": ("epie", "beta"),
    "rpie_weight": ("epie", "rpie_weight"),
    "overlap_iterations": ("dm", "overlap_iterations"),
    "fourier_relax": ("dm", "fourier_relax"), "dm_refine_from": ("dm", "refine_from"),
    "dm_refine_patience": ("dm", "refine_patience"),
    "noise_model": ("lsqml", "noise_model"),
}


def move_flat_keys(algorithm: dict) -> tuple[dict, str | None]:
    """``algorithm`` (a config file's mapping) with its deprecated flat keys moved into their
    engine sections, and one deprecation line naming them (None when there are none).

    A flat key and its section key with different values is a :class:`ConfigError`.
    """
    flat = [k for k in algorithm if k in FLAT_KEYS]
    if not flat:
        return algorithm, None
    out = {k: v for k, v in algorithm.items() if k not in FLAT_KEYS}
    for key in flat:
        section, new = FLAT_KEYS[key]
        node = out.get(section)
        if node is None:
            node = {}
        elif not isinstance(node, dict):
            raise ConfigError(f"algorithm.{section} = {node!r}: expected a mapping of keys")
        else:
            node = dict(node)
        if new in node and node[new] != algorithm[key]:
            raise ConfigError(f"algorithm.{key} = {algorithm[key]!r} and algorithm.{section}."
                              f"{new} = {node[new]!r} disagree; keep only "
                              f"algorithm.{section}.{new}")
        node[new] = algorithm[key]
        out[section] = node
    return out, _note(flat)


def _note(flat: list[str]) -> str:
    moves = ", ".join(f"algorithm.{k} -> algorithm.{'.'.join(FLAT_KEYS[k])}" for k in flat)
    return f"deprecated config keys, read as the new ones ({moves}); rename them"


def flat_key_note(key: str) -> None:
    """Warn (:class:`ConfigDeprecationWarning`) that flat key ``key`` was given, e.g. by
    ``--set algorithm.alpha=...``."""
    warnings.warn(_note([key]), ConfigDeprecationWarning, stacklevel=2)

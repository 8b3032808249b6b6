"""ptychopy's functions: whole mode (``epie``, ``epiecmdstr``, ``epienp``) and the stateful
step mode (``epieinit`` ... ``epiepost``), one open reconstruction per algorithm slot."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...app.api import Reconstruction
from ...errors import ConfigError
from .building import (
    reconstruction_from_arrays,
    reconstruction_from_cmdstr,
    reconstruction_from_kwargs,
)
from .outputs import _log_iteration, _stacked, run_whole, write_outputs
from .params import _DISPLAY, PtychopyOptions

log = logging.getLogger("ptychompi.compat.ptychopy")


# ----------------------------------------------------------------------------- step mode
@dataclass
class StepSession:
    """An open step-mode reconstruction (one per algorithm slot)."""

    reconstruction: Reconstruction
    options: PtychopyOptions
    comm: Any | None


_SESSIONS: dict[str, StepSession] = {}  # ptychopy's step API is stateful by design


def _slot(name: str) -> str:
    return "lsqml" if name in ("mls", "lsqml") else name


def step_session(algorithm: str) -> StepSession | None:
    """The open step-mode session of ``algorithm`` (epie | dm | lsqml | mls), if any."""
    return _SESSIONS.get(_slot(algorithm))


def _open(name: str, recon: Reconstruction, opts: PtychopyOptions, comm: Any | None) -> bool:
    slot = _slot(name)
    old = _SESSIONS.pop(slot, None)
    if old is not None:
        log.warning("%sinit: closing the open %s reconstruction without writing it", name,
                    slot)
        old.reconstruction.close()
    _SESSIONS[slot] = StepSession(recon, opts, comm)
    return True


def _session(name: str, func: str, comm: Any | None) -> StepSession:
    s = _SESSIONS.get(_slot(name))
    if s is None:
        raise ConfigError(f"{name}{func}() without an open reconstruction; call {name}init() "
                          "first")
    if comm is not None and s.comm is not None and comm != s.comm:
        raise ConfigError(f"{name}{func}(comm=...) differs from the communicator given to "
                          f"{name}init()")
    return s


def _algo(name: str) -> str:
    return "lsqml" if name == "mls" else name


def _make_whole(name: str) -> Callable[..., bool]:
    def whole(cmdstr: str | None = None, /, *, comm: Any | None = None, **kw: Any) -> bool:
        if cmdstr is not None:
            if kw:
                raise ConfigError(f"{name}(): give a command string or keywords, not both")
            recon, opts = reconstruction_from_cmdstr(cmdstr, comm, algorithm=_algo(name))
        else:
            recon, opts = reconstruction_from_kwargs(_algo(name), comm, **kw)
        with recon:
            run_whole(recon, opts)
            write_outputs(recon, opts)
        return True

    whole.__name__ = whole.__qualname__ = name
    whole.__doc__ = (f"Whole {_DISPLAY[_algo(name)]} run from ptychopy keywords (or a command "
                     "string); writes data/<jobID>_*; returns True.")
    return whole


def _make_cmdstr(name: str) -> Callable[..., np.ndarray | None]:
    def cmd(cmdstr: str, *, comm: Any | None = None) -> np.ndarray | None:
        recon, opts = reconstruction_from_cmdstr(cmdstr, comm, algorithm=_algo(name))
        with recon:
            run_whole(recon, opts)
            write_outputs(recon, opts)
            return recon.object

    cmd.__name__ = cmd.__qualname__ = f"{name}cmdstr"
    cmd.__doc__ = (f"Whole {_DISPLAY[_algo(name)]} run from a command string; writes the "
                   "files; returns the object (rank 0; None on other ranks).")
    return cmd


def _make_np(name: str) -> Callable[..., bool]:
    def np_run(*, comm: Any | None = None, diffractionNP: Any = None,  # noqa: N803
               positionNP: Any = None, objectNP: Any = None, probeNP: Any = None,  # noqa: N803
               **kw: Any) -> bool:
        recon, opts = reconstruction_from_arrays(
            _algo(name), comm, diffractionNP=diffractionNP, positionNP=positionNP,
            objectNP=objectNP, probeNP=probeNP, **kw)
        with recon:
            run_whole(recon, opts)
            write_outputs(recon, opts)
        return True

    np_run.__name__ = np_run.__qualname__ = f"{name}np"
    np_run.__doc__ = (f"Whole {_DISPLAY[_algo(name)]} run on numpy arrays (diffractionNP "
                      "(N, size, size) cropped and centred, positionNP (N, 2) metres row, col; "
                      "objectNP, probeNP optional); writes the files; returns True.")
    return np_run


def _make_init(name: str) -> Callable[..., bool]:
    def init(cmdstr: str | None = None, /, *, comm: Any | None = None, **kw: Any) -> bool:
        if cmdstr is not None:
            if kw:
                raise ConfigError(f"{name}init(): give a command string or keywords, not both")
            recon, opts = reconstruction_from_cmdstr(cmdstr, comm, algorithm=_algo(name))
        else:
            recon, opts = reconstruction_from_kwargs(_algo(name), comm, **kw)
        return _open(name, recon, opts, comm)

    init.__name__ = init.__qualname__ = f"{name}init"
    init.__doc__ = (f"Step mode: open a {_DISPLAY[_algo(name)]} reconstruction from a command "
                    "string or ptychopy keywords; returns True.")
    return init


def _make_npinit(name: str) -> Callable[..., bool]:
    def npinit(*, comm: Any | None = None, diffractionNP: Any = None,  # noqa: N803
               positionNP: Any = None, objectNP: Any = None, probeNP: Any = None,  # noqa: N803
               **kw: Any) -> bool:
        recon, opts = reconstruction_from_arrays(
            _algo(name), comm, diffractionNP=diffractionNP, positionNP=positionNP,
            objectNP=objectNP, probeNP=probeNP, **kw)
        return _open(name, recon, opts, comm)

    npinit.__name__ = npinit.__qualname__ = f"{name}npinit"
    npinit.__doc__ = (f"Step mode: open a {_DISPLAY[_algo(name)]} reconstruction on numpy "
                      "arrays; returns True.")
    return npinit


def _make_step(name: str) -> Callable[..., bool]:
    def step(*, comm: Any | None = None) -> bool:
        s = _session(name, "step", comm)
        _log_iteration(s.reconstruction, s.reconstruction.step())
        return True

    step.__name__ = step.__qualname__ = f"{name}step"
    step.__doc__ = "Step mode: one iteration (collective); returns True."
    return step


def _make_resobj(name: str) -> Callable[..., np.ndarray | None]:
    def resobj(*, comm: Any | None = None) -> np.ndarray | None:
        return _session(name, "resobj", comm).reconstruction.object

    resobj.__name__ = resobj.__qualname__ = f"{name}resobj"
    resobj.__doc__ = ("Step mode: the object, complex 2-D (collective; rank 0, None on the "
                      "other ranks).")
    return resobj


def _make_resprobe(name: str) -> Callable[..., np.ndarray]:
    def resprobe(*, comm: Any | None = None) -> np.ndarray:
        return _stacked(_session(name, "resprobe", comm).reconstruction.probe)

    resprobe.__name__ = resprobe.__qualname__ = f"{name}resprobe"
    resprobe.__doc__ = "Step mode: the probe modes stacked vertically, (K*M, M) complex."
    return resprobe


def _make_post(name: str) -> Callable[..., bool]:
    def post(*, comm: Any | None = None) -> bool:
        s = _session(name, "post", comm)
        try:
            write_outputs(s.reconstruction, s.options)
        finally:
            _SESSIONS.pop(_slot(name), None)
            s.reconstruction.close()
        return True

    post.__name__ = post.__qualname__ = f"{name}post"
    post.__doc__ = "Step mode: write data/<jobID>_* and close the reconstruction; returns True."
    return post


epie = _make_whole("epie")
dm = _make_whole("dm")
lsqml = _make_whole("lsqml")
mls = _make_whole("mls")
epiecmdstr = _make_cmdstr("epie")
dmcmdstr = _make_cmdstr("dm")
lsqmlcmdstr = _make_cmdstr("lsqml")
mlscmdstr = _make_cmdstr("mls")
epienp = _make_np("epie")
dmnp = _make_np("dm")
lsqmlnp = _make_np("lsqml")
mlsnp = _make_np("mls")
epieinit = _make_init("epie")
dminit = _make_init("dm")
lsqmlinit = _make_init("lsqml")
mlsinit = _make_init("mls")
epienpinit = _make_npinit("epie")
dmnpinit = _make_npinit("dm")
lsqmlnpinit = _make_npinit("lsqml")
mlsnpinit = _make_npinit("mls")
epiestep = _make_step("epie")
dmstep = _make_step("dm")
lsqmlstep = _make_step("lsqml")
mlsstep = _make_step("mls")
epieresobj = _make_resobj("epie")
dmresobj = _make_resobj("dm")
lsqmlresobj = _make_resobj("lsqml")
mlsresobj = _make_resobj("mls")
epieresprobe = _make_resprobe("epie")
dmresprobe = _make_resprobe("dm")
lsqmlresprobe = _make_resprobe("lsqml")
mlsresprobe = _make_resprobe("mls")
epiepost = _make_post("epie")
dmpost = _make_post("dm")
lsqmlpost = _make_post("lsqml")
mlspost = _make_post("mls")

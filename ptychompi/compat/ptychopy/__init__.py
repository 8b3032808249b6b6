"""APS ptychopy compatibility: its command strings, its Python keywords and its functions.

Existing beamline scripts run unchanged::

    import ptychompi.compat.ptychopy as ptychopy
    ptychopy.epieinit("./ptycho -jobID=sim512 -beamSize=110e-9 -scanDims=30,30 "
                      "-step=50e-9,50e-9 -i=100 -size=512 -lambda=2.4796837508399954e-10 "
                      "-dx_d=172e-6 -z=1 -simulate=1")
    for i in range(100):
        ptychopy.epiestep()
    obj, probe = ptychopy.epieresobj(), ptychopy.epieresprobe()
    ptychopy.epiepost()          # data/sim512_object_0.csv, data/sim512_probes_0.csv

Entry points (``A`` = ``epie``, ``dm``, ``lsqml`` or its alias ``mls``; each takes ``comm=``,
an mpi4py communicator, ``None`` = this process alone):

* :func:`parse` / :func:`parse_full`: a command string to a :class:`~ptychompi.config.Config`
  (plus :class:`PtychopyOptions`, the parameters without a config key);
  :func:`reconstruction_from_cmdstr` builds the :class:`~ptychompi.app.api.Reconstruction`
  (``ptychompi run --ptychopy``); :func:`run_whole` and :func:`write_outputs` finish it.
* whole mode: ``A(**kw)`` or ``A(cmdstr)`` and ``Anp(diffractionNP=, positionNP=, objectNP=,
  probeNP=, **kw)`` return ``True``; ``Acmdstr(cmdstr)`` returns the object.
* step mode: ``Ainit(cmdstr or **kw)``, ``Anpinit(diffractionNP=, ...)``, ``Astep()``,
  ``Aresobj()``, ``Aresprobe()``, ``Apost()``. ptychopy's step API is stateful by design, so
  the open reconstruction lives in a module-level registry with one slot per algorithm
  (``mls`` shares the ``lsqml`` slot; a second ``Ainit`` closes the first); ``Apost`` writes
  the files, closes the reconstruction and frees the slot. On several ranks every function is
  collective: call it on every rank. ``Aresobj()`` returns the assembled object on rank 0 and
  ``None`` on the other ranks; ``Aresprobe()`` returns the probe on every rank.

Results: the object as a complex 2-D array (complex64 by default), the probe as ptychopy
stacks it, ``(K*M, M)`` complex. Files, written by rank 0 as ptychopy does, relative to the
working directory (``data/`` is created): ``data/<jobID>_object_0.csv`` and
``data/<jobID>_probes_0.csv`` (``.bin`` with ``-binaryOutput=1``; ``_<i/N>`` every N iterations
with ``-save=N`` in whole mode), plus ptychompi's result file ``data/<jobID>_result.h5``.

Parameters: :data:`PARAMETERS` lists every ptychopy parameter with its config target, its
converter and a note; :data:`PY_KEYWORDS` maps ptychopy's Python keywords onto them. Keys are
case-insensitive, the leading dash is optional, the first token (``./ptycho``) is the program
name and is ignored, flags may come without a value (``-sqrtData``), pairs are ``a,b``.
Unknown parameters and bad values raise a one-line :class:`~ptychompi.errors.ConfigError`.
Defaults are ptychopy's own: the C++ struct defaults for command strings, the (different)
keyword defaults of ``ptychopy.c`` for the keyword functions (``PTYCHOPY.md`` section 1).

Where ptychompi deliberately differs from ptychopy (its defects fixed, or no equivalent):

* ``-step=50e-9`` (one value) is a float step for both axes (ptychopy's ``atoi`` made it 50).
* ``-delta_p`` is parsed and checked (both ptychopy parsers drop it); ptychompi's LSQML uses
  a fixed 0.1, ptychopy's value, so other values only draw a warning.
* ``-sqrtData``, ``-threshold``, ``-bitDepth`` act as ptycholib intended (ptychopy stopped
  applying them in 2021): ePIE/DM frames are Fourier moduli unless ``-sqrtData`` says they
  are intensities (``preprocess.amplitudes = not sqrtData``); MLs always takes intensities,
  as ptychopy's ``prePhase`` does. Simulated frames are intensities.
* ``-updateProbe=N`` starts probe updates in iteration N counted from 1, as ptychopy, which
  is ``probe_update_start = N-1`` in ptychompi's 0-based count.
* ``-size`` crops only frames larger than ``size``; ``-qxy`` is the crop centre; without
  ``-qxy`` ptychompi uses the centre of mass (ptychopy's default 128,128 is a 256-pixel
  detector's centre). Frames smaller than the window are an error (ptychopy zero-pads).
* ``-shareFrequency`` defaults to 1 (exact halo exchange every iteration, DESIGN.md 6), not
  ptychopy's 10. ``-RMS`` is accepted: ptychompi always reports its error metric.
* ``-beamstopMask=1`` reads ``<folder of -fp>/beamstopMask.h5`` (the ``-hdf5path`` dataset,
  first frame) with ptychopy's meaning, value < 0.99 = blocked.
* ``-fftShiftData`` has no effect: ptychompi expects centred frames (files, and the arrays of
  the numpy API) and shifts them itself. ``-rotate90`` is counter-clockwise (``np.rot90``).
* ``-mirror1stScanAxis``/``-mirror2ndScanAxis``/``-flipScanAxis`` also apply to ``-lf``
  position lists; ``-drift`` and ``-jitterRadius`` apply to raster scans of files, and
  ``-jitterRadius`` to simulated scans.
* ``-simulate=1`` simulates with :func:`ptychompi.sim.simulate.simulate` (a Siemens-star object,
  not lena/baboon): ``-size`` pixel frames, a ``-scanDims`` raster (equal steps on both axes),
  object pixel ``lambda z / (size dx_d)``, beam diameter ``beamSize`` / pixel (it must fit the
  frame), 1e6 photons per frame with Poisson noise, seed ``algorithm.seed``.
* ``-fp`` reads HDF5 row files (and CXI files); ptychopy's raw ``.csv``/``.bin`` frames are
  refused. ``-T`` and ``-save`` act in whole mode only.
* Object arrays carry ptychompi's margin (``geometry.object_margin_px``) and may be a few
  pixels larger than ptychopy's; an ``-objectGuess``/``objectNP`` of another shape is centred
  in (or cropped to) ptychompi's object.
* Stepping past ``-i`` iterations is allowed (ptychopy overran its error array), the registry
  holds one reconstruction per algorithm (ptychopy had one global phaser), and keyword errors
  raise (ptychopy printed them and went on).
* No effect, accepted: ``-nxy``, ``-threads``, ``-overlap``, ``-angles``, ``-blind``,
  ``-updateVis``, ``-wsServerUrl``, ``-phaseConstraint``, ``-updateModes``, ``-PPS`` (see
  their notes in :data:`PARAMETERS`).
"""

from __future__ import annotations

from .building import (
    reconstruction_from_arrays,
    reconstruction_from_cmdstr,
    reconstruction_from_kwargs,
)
from .outputs import run_whole, write_outputs
from .params import CPP_DEFAULTS, PARAMETERS, PY_DEFAULTS, PY_KEYWORDS, PtychopyOptions
from .parsing import parse, parse_full, parse_kwargs
from .steps import (
    StepSession,
    dm,
    dmcmdstr,
    dminit,
    dmnp,
    dmnpinit,
    dmpost,
    dmresobj,
    dmresprobe,
    dmstep,
    epie,
    epiecmdstr,
    epieinit,
    epienp,
    epienpinit,
    epiepost,
    epieresobj,
    epieresprobe,
    epiestep,
    lsqml,
    lsqmlcmdstr,
    lsqmlinit,
    lsqmlnp,
    lsqmlnpinit,
    lsqmlpost,
    lsqmlresobj,
    lsqmlresprobe,
    lsqmlstep,
    mls,
    mlscmdstr,
    mlsinit,
    mlsnp,
    mlsnpinit,
    mlspost,
    mlsresobj,
    mlsresprobe,
    mlsstep,
    step_session,
)

__all__ = [
    "PARAMETERS", "PY_KEYWORDS", "CPP_DEFAULTS", "PY_DEFAULTS", "PtychopyOptions",
    "StepSession", "parse", "parse_full", "parse_kwargs", "reconstruction_from_cmdstr",
    "reconstruction_from_kwargs", "reconstruction_from_arrays", "run_whole", "write_outputs",
    "step_session",
    "epie", "dm", "lsqml", "mls",
    "epiecmdstr", "dmcmdstr", "lsqmlcmdstr", "mlscmdstr",
    "epienp", "dmnp", "lsqmlnp", "mlsnp",
    "epieinit", "dminit", "lsqmlinit", "mlsinit",
    "epienpinit", "dmnpinit", "lsqmlnpinit", "mlsnpinit",
    "epiestep", "dmstep", "lsqmlstep", "mlsstep",
    "epieresobj", "dmresobj", "lsqmlresobj", "mlsresobj",
    "epieresprobe", "dmresprobe", "lsqmlresprobe", "mlsresprobe",
    "epiepost", "dmpost", "lsqmlpost", "mlspost",
]

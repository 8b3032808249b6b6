"""A human-readable summary of an MDA file (``ptychompi inspect``, the GUI)."""

from __future__ import annotations

import numpy as np

from .parameters import _unit, scan_parameters
from .records import MdaFile

# --------------------------------------------------------------------------- summary


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def summary(mda: MdaFile) -> str:
    """A one-screen, human-readable description of an MDA file."""
    lines = [
        f"MDA file   {mda.path.name}",
        f"version    {mda.version:.1f}   scan number {mda.scan_number}   rank {mda.rank}"
        f"   regular {'yes' if mda.regular else 'no'}",
        f"dims       requested {' x '.join(map(str, mda.dims))}"
        f"   acquired {' x '.join(map(str, mda.acquired_dims))}   (outer -> inner)",
    ]
    if mda.aborted:
        why = "no extra-PV section (unfinished)" if mda.extra_pv_offset == 0 else "stopped early"
        lines.append(f"status     ABORTED/PARTIAL: {why}")
    else:
        lines.append("status     complete")
    level = mda.scan
    while True:
        lines.append(
            f"level {level.rank}    {level.name}  npts {level.npts}  cpt {level.cpt}"
            f"  ({level.time_stamp})"
        )
        if not level.positioners:
            lines.append("             no positioners")
        for p in level.positioners:
            rng = (
                f"{_fmt(float(np.nanmin(p.data)))} .. {_fmt(float(np.nanmax(p.data)))}"
                if p.data.size
                else "no points"
            )
            desc = f' "{p.description}"' if p.description else ""
            lines.append(
                f"             P{p.number + 1} {p.name}{desc} [{_unit(p) or '-'}] "
                f"{p.step_mode or '-'}  {rng}"
            )
        lines.append(
            f"             {len(level.detectors)} detectors, {len(level.triggers)} triggers"
            + (f" ({', '.join(t.name for t in level.triggers)})" if level.triggers else "")
        )
        if not level.sub_scans:
            break
        if level is mda.scan:
            lines[-1] += f", {len(level.sub_scans)} inner scans stored"
        level = level.sub_scans[0]
    n_dup = len(mda.extra_pvs) - len(mda.extra_pv_dict)
    lines.append(
        f"extra PVs  {len(mda.extra_pvs)}" + (f" ({n_dup} duplicate names)" if n_dup else "")
        if mda.extra_pv_offset
        else "extra PVs  none (section missing)"
    )
    params = scan_parameters(mda)
    if params.get("energy_kev") is not None:
        lines.append(f"energy     {params['energy_kev']:.5g} keV  (from {params['energy_kev_pv']})")
    else:
        lines.append("energy     unknown")
    return "\n".join(lines)

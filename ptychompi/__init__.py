"""ptychompi: MPI + GPU ptychographic reconstruction (ePIE, DM, LSQML) on spatial tiles."""

from __future__ import annotations

__version__ = "0.1.0"

from .app.api import Reconstruction
from .config import Config, default_yaml, load_config
from .errors import ConfigError, DataError, PtychompiError
from .sim.simulate import simulate, simulate_to_files


def read_scan(path: str):  # -> ScanSource
    """Open a scan file (CXI, or APS row files with their config keys) lazily."""
    from .data.dataset import open_source  # noqa: PLC0415

    return open_source(load_config({"data": {"path": str(path)}}))


__all__ = ["Reconstruction", "Config", "load_config", "default_yaml", "read_scan", "simulate",
           "simulate_to_files", "PtychompiError", "ConfigError", "DataError", "__version__"]

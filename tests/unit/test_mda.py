"""Tests for the EPICS MDA reader against the real files in shared/data/mda."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from ptychompi.errors import DataError
from ptychompi.io.mda import MdaFile, read_mda, scan_parameters, summary

MDA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mda"
SAMPLE1 = MDA_DIR / "sscan_sample1.mda"
IDD = MDA_DIR / "mdaviz_29idd_mda_0002.mda"
ARPES = MDA_DIR / "mdaviz_29idARPES_ARPES_0002.mda"
KAPPA = MDA_DIR / "mdaviz_29idKappa_Kappa_0009.mda"
XFM = MDA_DIR / "xrfmaps_2ide_2xfm_0011.mda"
ALL = [SAMPLE1, IDD, ARPES, KAPPA, XFM]

pytestmark = pytest.mark.skipif(not MDA_DIR.is_dir(), reason=f"no MDA test data at {MDA_DIR}")


def _types(mda: MdaFile) -> dict[str, int]:
    out: dict[str, int] = {}
    for pv in mda.extra_pvs:
        out[pv.type] = out.get(pv.type, 0) + 1
    return out


@pytest.mark.parametrize(
    ("path", "version", "rank", "dims", "acquired", "n_extra"),
    [
        (SAMPLE1, 1.3, 1, [10], [10], 24),
        (IDD, 1.3, 1, [9], [9], 170),
        (ARPES, 1.4, 1, [1], [1], 152),
        (KAPPA, 1.4, 2, [21, 21], [7, 21], 162),
        (XFM, 1.3, 2, [11, 11], [11, 11], 843),
    ],
)
def test_headers(
    path: Path, version: float, rank: int, dims: list, acquired: list, n_extra: int
) -> None:
    mda = read_mda(path)
    assert mda.version == pytest.approx(version)
    assert mda.rank == rank == mda.scan.rank
    assert mda.dims == dims
    assert mda.acquired_dims == acquired
    assert mda.regular
    assert len(mda.extra_pvs) == n_extra
    assert mda.path == path
    for scan in [mda.scan, *mda.scan.sub_scans]:
        for p in scan.positioners:
            assert p.data.dtype == np.float64 and p.data.shape == (scan.cpt,)
        for d in scan.detectors:
            assert d.data.shape == (scan.cpt,)


def test_sample1_scan_and_type_coverage() -> None:
    mda = read_mda(SAMPLE1)
    assert mda.scan_number == 1
    scan = mda.scan
    assert (scan.name, scan.npts, scan.cpt) == ("xxx:scan1", 10, 10)
    assert scan.time_stamp == "Nov 14, 2006 08:42:25.618125"
    (p1,) = scan.positioners
    assert (p1.number, p1.name, p1.step_mode) == (0, "xxx:userCalc10.A", "LINEAR")
    np.testing.assert_array_equal(p1.data, np.arange(1, 11))
    (d1,) = scan.detectors
    assert (d1.number, d1.name) == (0, "xxx:userCalc10.VAL")
    np.testing.assert_array_equal(d1.data, np.arange(1, 11))
    assert scan.triggers == [] and scan.sub_scans == []

    assert _types(mda) == {
        "DBR_STRING": 8,
        "DBR_CTRL_LONG": 5,
        "DBR_CTRL_DOUBLE": 4,
        "DBR_CTRL_CHAR": 3,
        "DBR_CTRL_SHORT": 2,
        "DBR_CTRL_FLOAT": 2,
    }
    pv = mda.extra_pv_dict
    assert pv["xxx:userCalc1.CALC"].value == "exp(-.5*(a-b)^2/c^2)"
    assert pv["xxx:saveData_realTime1D"].value == "No"  # enum stored as its string
    assert pv["xxx:SR_ao.SCAN"].value == "Event"
    assert pv["xxx:SR_string_array"].value == "1"  # only the first element is stored
    assert pv["xxx:saveData_scanNumber"].value == 2
    assert pv["xxx:SR_ao.DISP"].type == "DBR_CTRL_CHAR" and pv["xxx:SR_ao.DISP"].value == 0
    assert pv["xxx:SR_ao.PREC"].value == 1
    assert pv["xxx:SR_scaler.RATE"].value == 1.0
    assert pv["xxx:SR_bi.SVAL"].type == "DBR_CTRL_DOUBLE"  # ulong -> double
    assert pv["xxx:SR_bo.IVOV"].type == "DBR_CTRL_LONG"  # ushort -> long
    # 10-element char arrays take 4 bytes per element; decoding 1 byte/char misaligns.
    for name in ("xxx:SR_char_array", "xxx:SR_uchar_array"):
        assert pv[name].type == "DBR_CTRL_CHAR" and pv[name].count == 10
        np.testing.assert_array_equal(pv[name].value, np.arange(1, 11))
    for name in ("short", "long", "ushort", "float", "double", "ulong"):
        arr = pv[f"xxx:SR_{name}_array"]
        assert arr.count == 10
        np.testing.assert_array_equal(arr.value, np.arange(1, 11))
    # the PV after the char arrays still parses, so alignment held
    assert mda.extra_pvs[-1].name == "xxx:SR_ushort_array"


def test_29idd_positioner_detectors_energy() -> None:
    mda = read_mda(IDD)
    scan = mda.scan
    assert scan.time_stamp.startswith("AUG 02, 2017")
    (p1,) = scan.positioners
    assert (p1.name, p1.description, p1.unit) == ("29idd:m3.VAL", "z", "mm")
    assert (p1.readback_name, p1.readback_unit) == ("29idd:m3.RBV", "mm")
    assert p1.data[0] == pytest.approx(-22.0) and p1.data[-1] == pytest.approx(-24.0)
    assert len(scan.detectors) == 21
    numbers = [d.number + 1 for d in scan.detectors]  # sparse D01-D15, D18-D21, D23, D24
    assert numbers == [*range(1, 16), 18, 19, 20, 21, 23, 24]
    assert scan.detector("29idmono:ENERGY_MON").unit == "eV"
    assert [t.name for t in scan.triggers] == ["29idb:userStringSeq7.PROC"]
    assert scan.triggers[0].command == 1.0
    assert _types(mda) == {"DBR_STRING": 36, "DBR_CTRL_LONG": 21, "DBR_CTRL_DOUBLE": 113}
    sp = mda.extra_pv_dict["29idmono:ENERGY_SP"]
    assert (sp.value, sp.unit) == (520.0, "eV")

    params = scan_parameters(mda)
    assert params["energy_kev"] == pytest.approx(0.520)
    assert params["energy_kev_pv"] == "29idmono:ENERGY_SP"
    assert params["scan_dims"] == (9,)
    assert params["fast_name"] == "29idd:m3.VAL" and params["fast_unit"] == "mm"
    assert params["fast_step"] == pytest.approx(0.25)
    assert params["fast_step_m"] == pytest.approx(0.25e-3)
    assert params["slow_positions"] is None


def test_arpes_zero_positioners() -> None:
    mda = read_mda(ARPES)
    scan = mda.scan
    assert (scan.npts, scan.cpt, scan.positioners) == (1, 1, [])
    assert len(scan.detectors) == 20
    assert [t.name for t in scan.triggers] == [
        "29idARPES:userStringSeq8.PROC",
        "29idcScienta:HV:ScanTrigger",
    ]
    assert scan.detector("29idcScienta:HDF1:FileName").data[0] == 77.0  # 'M'
    assert _types(mda) == {"DBR_STRING": 12, "DBR_CTRL_LONG": 15, "DBR_CTRL_DOUBLE": 125}
    params = scan_parameters(mda)
    assert params["fast_positions"] is None and params["fast_step"] is None
    assert params["energy_kev"] == pytest.approx(0.5)
    # a PV map overrides the default: undulator set point in keV
    over = scan_parameters(mda, {"energy_kev": ["ID29:EnergySet.VAL"]})
    assert over["energy_kev"] == pytest.approx(0.5127)
    # readback in eV is converted; detector columns are searched too
    assert scan_parameters(mda, {"energy_kev": ["ID29:EnergyRBV"]})["energy_kev"] == (
        pytest.approx(0.5028, abs=1e-4)
    )
    text = summary(mda)
    assert "no positioners" in text and "20 detectors" in text


def test_kappa_aborted_scan() -> None:
    mda = read_mda(KAPPA)
    outer = mda.scan
    assert (outer.name, outer.npts, outer.cpt) == ("29idKappa:scan2", 21, 7)
    assert outer.detectors == []
    assert [t.name for t in outer.triggers] == ["29idKappa:scan1.EXSC"]
    (p1,) = outer.positioners
    assert (p1.name, p1.description, p1.unit) == ("29idKappa:m2.VAL", "x", "um")
    assert p1.data.shape == (7,)
    assert p1.data[0] == pytest.approx(-5237, abs=1) and p1.data[-1] == pytest.approx(-4637, abs=1)

    # 8 non-zero child offsets: 7 complete rows plus the row in progress (cpt 3)
    assert len(outer.sub_scans) == 8
    assert [s.cpt for s in outer.sub_scans] == [21] * 7 + [3]
    inner = outer.sub_scans[0]
    assert inner.name == "29idKappa:scan1" and inner.rank == 1
    assert len(inner.detectors) == 44 and max(d.number for d in inner.detectors) <= 69
    q1 = inner.positioners[0]
    assert (q1.name, q1.description, q1.unit) == ("29idKappa:m3.VAL", "y", "um")
    assert q1.data[0] == pytest.approx(-2800, abs=1) and q1.data[-1] == pytest.approx(-800, abs=1)
    assert mda.aborted

    pv = mda.extra_pv_dict
    assert _types(mda) == {"DBR_STRING": 30, "DBR_CTRL_LONG": 12, "DBR_CTRL_DOUBLE": 120}
    assert pv["29idKappa:UBsample"].value == "La4Ni3O10"
    assert pv["29idKappa:UBmatrix"].value.shape == (9,)
    np.testing.assert_allclose(
        pv["29idKappa:UBlattice"].value, [5.50, 5.47, 28.04, 90, 90, 90], atol=0.01
    )
    assert pv["29idKappa:UBor1"].count == pv["29idKappa:UBor2"].count == 7

    params = scan_parameters(mda)
    assert params["scan_dims"] == (7, 21)
    assert params["requested_dims"] == (21, 21)
    assert params["aborted"] and params["partial_rows"] == 1
    assert params["fast_positions"].shape == (7, 21)
    assert params["slow_positions"].shape == (7,)
    assert params["fast_step"] == pytest.approx(100, abs=0.1)
    assert params["slow_step"] == pytest.approx(100, abs=0.1)
    assert params["fast_step_m"] == pytest.approx(100e-6, rel=1e-3)
    assert params["energy_kev"] == pytest.approx(0.851)

    text = summary(mda)
    assert "ABORTED" in text and "21 x 21" in text and "7 x 21" in text
    assert "29idKappa:m2.VAL" in text and "29idKappa:m3.VAL" in text


def test_2xfm_fly_scan_and_duplicates() -> None:
    mda = read_mda(XFM)
    outer = mda.scan
    assert (outer.name, outer.cpt, len(outer.detectors)) == ("2xfm:Fscan1", 11, 29)
    y = outer.positioners[0]
    assert (y.name, y.description, y.unit, y.step_mode) == (
        "2xfm:m13.VAL",
        "Sample Y",
        "mm",
        "LINEAR",
    )
    assert y.data[0] == pytest.approx(3.25) and y.data[-1] == pytest.approx(3.75)
    assert len(outer.sub_scans) == 11
    inner = outer.sub_scans[0]
    assert inner.name == "2xfm:FscanH" and len(inner.detectors) == 52
    x = inner.positioners[0]
    assert (x.name, x.description, x.step_mode) == (
        "2xfm:FLYuserCalc10.A",
        "10F:drive (motor100)",
        "FLY",
    )
    assert x.data[0] == pytest.approx(-1.5) and x.data[-1] == pytest.approx(-1.0)
    assert [t.name for t in inner.triggers] == [
        "2xfm:mcs:EraseStart",
        "dxpXMAP2xfm3:netCDF1:Capture",
        "dxpXMAP2xfm3:EraseStart",
    ]
    assert not mda.aborted

    # 843 entries kept in file order, one name twice; the dict keeps the first.
    assert _types(mda) == {"DBR_STRING": 333, "DBR_CTRL_LONG": 261, "DBR_CTRL_DOUBLE": 249}
    names = [pv.name for pv in mda.extra_pvs]
    assert names.count("2xfm:scaler1.TP") == 2
    assert len(mda.extra_pv_dict) == 842
    first = next(pv for pv in mda.extra_pvs if pv.name == "2xfm:scaler1.TP")
    assert mda.extra_pv_dict["2xfm:scaler1.TP"] is first

    params = scan_parameters(mda)
    p1si = mda.extra_pv_dict["2xfm:scan1.P1SI"]
    assert (p1si.value, p1si.unit) == (pytest.approx(0.05), "mm")
    assert params["fast_step"] == pytest.approx(p1si.value)
    assert params["slow_step"] == pytest.approx(p1si.value)
    assert params["scan_dims"] == (11, 11)
    assert params["fast_positions"].shape == (11, 11)
    assert params["slow_name"] == "2xfm:m13.VAL"
    assert params["slow_positions_m"][0] == pytest.approx(3.25e-3)
    assert params["fast_positions_m"] is None  # the fly positioner has no unit
    mm = scan_parameters(mda, default_unit="mm")
    assert mm["fast_step_m"] == pytest.approx(0.05e-3)
    assert params["energy_kev"] == pytest.approx(12.869, abs=1e-3)
    ds = scan_parameters(mda, {"energy_kev": ["ID02ds:Energy.VAL"]})
    assert ds["energy_kev"] == pytest.approx(10.2975, abs=1e-3)
    assert "843 (1 duplicate names)" in summary(mda)


def test_missing_extra_pv_section(tmp_path: Path) -> None:
    raw = bytearray(SAMPLE1.read_bytes())
    extra_at = struct.unpack(">i", raw[20:24])[0]
    raw[20:24] = b"\0\0\0\0"
    path = tmp_path / "unfinished.mda"
    path.write_bytes(bytes(raw[:extra_at]))
    mda = read_mda(path)
    assert mda.extra_pvs == [] and mda.extra_pv_dict == {}
    assert mda.scan.cpt == 10 and mda.aborted
    assert "section missing" in summary(mda)


def test_unfinished_row_is_dropped(tmp_path: Path) -> None:
    """A file still being written, cut inside the in-progress row: keep complete rows."""
    raw = bytearray(KAPPA.read_bytes())
    # rank 2 header: version, scan#, rank, dims[2], regular, extra offset at byte 24
    assert struct.unpack(">i", raw[8:12])[0] == 2
    raw[24:28] = b"\0\0\0\0"
    offsets = struct.unpack(">21i", raw[40 : 40 + 84])
    path = tmp_path / "running.mda"
    path.write_bytes(bytes(raw[: offsets[7] + 100]))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        mda = read_mda(path)
    assert len(mda.scan.sub_scans) == 7
    assert scan_parameters(mda)["scan_dims"] == (7, 21)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_summary_is_short(path: Path) -> None:
    text = summary(read_mda(path))
    lines = text.splitlines()
    assert path.name in lines[0]
    assert len(lines) < 25 and all(len(line) < 160 for line in lines)


def _one_line_error(path: Path, match: str) -> str:
    with pytest.raises(DataError) as info:
        read_mda(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert path.name in msg
    assert match in msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    _one_line_error(tmp_path / "2xfm_9999.mda", "does not exist")


def test_not_mda(tmp_path: Path) -> None:
    path = tmp_path / "random.mda"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _one_line_error(path, "not an MDA file")
    text = tmp_path / "notes.mda"
    text.write_text("scan 1\nx y\n")
    _one_line_error(text, "not an MDA file")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_truncated(path: Path, tmp_path: Path) -> None:
    raw = path.read_bytes()
    cut = tmp_path / f"cut_{path.name}"
    for n in (0, 7, 30, 100, 333, len(raw) // 3, len(raw) // 2, len(raw) - 5, len(raw) - 1):
        cut.write_bytes(raw[:n])
        _one_line_error(cut, f"truncated at byte {n}")


def test_corrupt_never_escapes(tmp_path: Path) -> None:
    raw = KAPPA.read_bytes()
    rng = np.random.default_rng(1)
    path = tmp_path / "flipped.mda"
    for _ in range(200):
        bad = bytearray(raw)
        for i in rng.integers(4, len(raw), 3):
            bad[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(bad))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mda = read_mda(path)
            summary(mda)
        except DataError as exc:
            assert "\n" not in str(exc) and path.name in str(exc)

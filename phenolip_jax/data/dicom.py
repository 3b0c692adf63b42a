"""DICOM images to 8-bit RGB, as a radiologist's viewer would show them (pydicom).

A `.dcm` file holds stored values, not display values. Decoding applies, in order:
1. the middle frame of a multi-frame file (or the frame asked for);
2. the modality rescale (`RescaleSlope` x value + `RescaleIntercept`: CT values become Hounsfield units);
3. a window: the override asked for (a named preset such as `lung`, or `CENTER,WIDTH`), else the file's own
   `WindowCenter` / `WindowWidth` (the first when several), else the image's full range;
4. MONOCHROME1 inverted (its low values are white);
then grey is repeated into three channels. Colour files (RGB, YBR) are converted to RGB as stored.

The override and the frame come from the environment (`PHENOLIP_DICOM_WINDOW`, `PHENOLIP_DICOM_FRAME`), set once
per run by `configure` from the config: grain's worker processes inherit the environment whether they are forked
or spawned, so every decode in a run applies the same window.
"""
from __future__ import annotations

import io
import os

import numpy as np

WINDOW_ENV, FRAME_ENV = "PHENOLIP_DICOM_WINDOW", "PHENOLIP_DICOM_FRAME"
# (centre, width) in Hounsfield units: the usual CT presets.
PRESETS = {"lung": (-600.0, 1500.0), "mediastinum": (50.0, 350.0), "soft_tissue": (40.0, 400.0),
           "bone": (400.0, 1800.0), "brain": (40.0, 80.0), "liver": (60.0, 160.0), "stroke": (40.0, 40.0)}
_DECODER_HINT = ("install a decoder for its transfer syntax: `pip install pylibjpeg pylibjpeg-libjpeg "
                 "pylibjpeg-openjpeg` (JPEG, JPEG-LS, JPEG 2000) or `pip install python-gdcm`")


class DicomError(ValueError):
    """A DICOM file that cannot be shown as an image (no pixel data, a missing decoder, a bad window)."""


def is_dicom(data: bytes) -> bool:
    """Whether the bytes are a DICOM Part 10 file (the 'DICM' marker after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def parse_window(spec: str) -> tuple[float, float] | None:
    """(centre, width) of a preset name or 'CENTER,WIDTH'; None for ''; DicomError naming the choices."""
    spec = (spec or "").strip().lower()
    if not spec:
        return None
    if spec in PRESETS:
        return PRESETS[spec]
    try:
        centre, width = (float(x) for x in spec.split(","))
    except ValueError:
        centre, width = 0.0, -1.0
    if width <= 0:
        raise DicomError(f"DICOM window {spec!r}: use one of {', '.join(PRESETS)} or CENTER,WIDTH with WIDTH > 0")
    return centre, width


def configure(window: str = "", frame: int = -1) -> None:
    """Sets the run's window override and frame for every decode in this process and its workers."""
    parse_window(window)  # refuse a bad one before anything is read
    os.environ[WINDOW_ENV] = window or ""
    os.environ[FRAME_ENV] = str(int(frame))


def configure_from(section, prefix: str) -> None:
    """`configure` from a config section's dicom_window / dicom_frame (errors name `prefix`.dicom_window)."""
    try:
        configure(str(section.get("dicom_window", "")), int(section.get("dicom_frame", -1)))
    except DicomError as e:
        raise ValueError(f"{prefix}.dicom_window={section.get('dicom_window')!r}: {e}") from None


def _first(value) -> float | None:
    """A DICOM number that may be multi-valued (the first), or None when absent."""
    if value is None or value == "":
        return None
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else value)
    except (TypeError, ValueError, IndexError):
        return None


def _to_uint8(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Linear windowing to 0..255 (the full range when there is no window)."""
    if window is None:
        lo, hi = float(np.min(values)), float(np.max(values))
    else:
        lo, hi = window[0] - window[1] / 2.0, window[0] + window[1] / 2.0
    scaled = (values.astype(np.float64) - lo) / max(hi - lo, 1e-9)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def decode_dicom(data: bytes, window: str | None = None, frame: int | None = None) -> np.ndarray:
    """DICOM bytes -> uint8 [H, W, 3] (window / frame default to the run's `configure`d ones)."""
    import pydicom
    from pydicom.pixels import apply_rescale, convert_color_space

    window = os.environ.get(WINDOW_ENV, "") if window is None else window
    frame = int(os.environ.get(FRAME_ENV, "-1")) if frame is None else frame
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for bad bytes
        raise DicomError(f"unreadable DICOM: {type(e).__name__}: {e}") from e
    if "PixelData" not in ds:
        raise DicomError("DICOM file without pixel data (a report or structured document?)")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - a missing handler raises RuntimeError, bad data others
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise DicomError(f"compressed DICOM ({name}) with no decoder installed: {_DECODER_HINT}") from e
        raise DicomError(f"DICOM pixel data unreadable ({name}): {type(e).__name__}: {e}") from e
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    colour = int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1
    if frames > 1:
        index = frames // 2 if frame < 0 else frame
        if not 0 <= index < frames:
            raise DicomError(f"DICOM frame {frame} asked for, the file has {frames}")
        pixels = pixels[index]
    if colour:
        if photometric.startswith("YBR"):
            pixels = convert_color_space(pixels, photometric, "RGB")
        return np.ascontiguousarray(_to_uint8(pixels, None) if pixels.dtype != np.uint8 else pixels)
    values = apply_rescale(pixels, ds)
    override = parse_window(window)
    centre, width = _first(getattr(ds, "WindowCenter", None)), _first(getattr(ds, "WindowWidth", None))
    grey = _to_uint8(values, override or ((centre, width) if centre is not None and width and width > 0 else None))
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return np.repeat(grey[..., None], 3, axis=-1)

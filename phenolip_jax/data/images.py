"""Image decoding to 8-bit RGB, train/eval crops and normalisation (NumPy + Pillow)."""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from phenolip_jax.data import dicom

try:  # libjpeg-turbo straight into numpy: 1.5-1.8x Pillow's JPEG decode (benchmarks/jpeg_decode.py)
    import simplejpeg
except ImportError:  # optional: Pillow decodes everything
    simplejpeg = None

# CLIP / BiomedCLIP normalisation.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# File names read as images where a folder is listed (predict, the eval command's folder kind).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageDecodeError(ValueError):
    """Bytes that Pillow cannot decode (corrupt, truncated, not an image)."""


def _wide_to_uint8(img: Image.Image) -> np.ndarray:
    """16-bit / 32-bit grey to uint8 by scaling the full 16-bit range (65535 -> 255), not clipping."""
    a = np.asarray(img)
    if img.mode == "F":
        # Float images in [0, 1] are common (microscopy exports); larger ranges are taken as 16-bit.
        scale = 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else 255.0 / 65535.0
        a = np.nan_to_num(a.astype(np.float64)) * scale
    else:
        a = a.astype(np.float64) * (255.0 / 65535.0)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> tuple[np.ndarray, str | None]:
    """Pillow image -> (uint8 [H,W,3], original mode if a conversion happened else None).

    Alpha is composited on white (figure panels often have transparent backgrounds, and
    dropping alpha would expose arbitrary colours under them); palettes expand through RGBA
    when they carry transparency; 16-bit grey is scaled, not clipped.
    """
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8), None
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        grey = _wide_to_uint8(img)
        return np.repeat(grey[..., None], 3, axis=-1), mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8), mode


def decode_rgb(data: bytes) -> tuple[np.ndarray, str | None]:
    """Encoded bytes -> (uint8 [H,W,3], converted-from mode or None); raises ImageDecodeError. DICOM files are
    rescaled, windowed and inverted as data/dicom.py says (converted from 'DICOM')."""
    if dicom.is_dicom(data):
        try:
            return dicom.decode_dicom(data), "DICOM"
        except dicom.DicomError as e:
            raise ImageDecodeError(str(e)) from e
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # force a full decode so truncated files fail here, not later
        img = ImageOps.exif_transpose(img)
        rgb, converted = to_rgb(img)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for bad bytes
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from e
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError(f"empty image of shape {rgb.shape}")
    return rgb, converted


def decode_rgb_fast(data: bytes) -> np.ndarray:
    """`decode_rgb(data)[0]` for bytes already validated, with a plain JPEG (YCbCr, no EXIF) decoded by simplejpeg.

    Both decoders are libjpeg-turbo with the same settings: the pixels are identical (tests check it). Anything
    else (grey or CMYK JPEGs, EXIF orientation, PNG, ...) takes Pillow's path, which also reports conversions.
    """
    if simplejpeg is not None and data[:2] == b"\xff\xd8" and b"Exif\x00\x00" not in data[:65536]:
        try:
            if simplejpeg.decode_jpeg_header(data)[2] == "YCbCr":
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:  # simplejpeg refuses what Pillow may still read
            pass
    return decode_rgb(data)[0]


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (4:2:0, no EXIF: what decode_rgb_fast takes)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def shorter_side_to(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resized (bicubic) so that the shorter side is `size`; a smaller image is left as it is (never upscaled)."""
    h, w = rgb.shape[:2]
    if min(h, w) <= size:
        return rgb
    s = size / min(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(size, round(w * s)), max(size, round(h * s))),
                                                  Image.BICUBIC))


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: Sequence[float] = (0.9, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) as torchvision's RandomResizedCrop samples it."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    # Fallback: the largest centre crop within the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def train_view(rgb: np.ndarray, size: int, rng: np.random.Generator,
               scale: Sequence[float] = (0.9, 1.0), hflip: bool = False) -> np.ndarray:
    """Random resized crop (bicubic) to size x size, optional horizontal flip; uint8."""
    img = Image.fromarray(rgb)
    box = random_resized_crop_box(rgb.shape[0], rgb.shape[1], rng, scale)
    out = np.asarray(img.resize((size, size), Image.BICUBIC, box=box))
    # Flip is off by default: laterality (left/right) is clinically meaningful.
    if hflip and rng.uniform() < 0.5:
        out = out[:, ::-1]
    return out


def eval_view(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to `size` (bicubic), then centre crop size x size; uint8."""
    h, w = rgb.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, int(round(h * s))), max(size, int(round(w * s)))
    img = Image.fromarray(rgb).resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(img)[top:top + size, left:left + size]


def normalize(img: np.ndarray, mean: Sequence[float] = CLIP_MEAN,
              std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """uint8 [..., H, W, 3] -> float32 (x/255 - mean) / std; numpy arrays or jax arrays (inside jit)."""
    x = img.astype(np.float32) * np.float32(1 / 255)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def model_input(images: Any, data_cfg: Any) -> Any:
    """Batch images as the model takes them: uint8 (what the pipelines ship) is normalised here with
    `data_cfg.mean` / `data_cfg.std`, on the device when called inside jit; float images are taken as already
    normalised (and `data_cfg` is not read)."""
    if images.dtype == np.uint8:
        return normalize(images, data_cfg.mean, data_cfg.std)
    return images

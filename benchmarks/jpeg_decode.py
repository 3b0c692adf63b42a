"""Decoders side by side: images per CPU second for decode + the train crop, from the same JPEG bytes.

    python benchmarks/jpeg_decode.py [--images DIR] [--n 256] [--source_px 256] [--size 224] [--quality 90]

The bytes are what a packed shard stores (`--image_size=256 --image_format=jpeg`): each image's shorter side
resized to --source_px and encoded as JPEG. With --images (e.g. MedPix 2.0's PNGs) they come from real images;
without, from generated ones (smooth gradients + noise, which compress like photographs). Timed per decoder:
decode alone, and decode + a random resized crop to --size (bicubic, Pillow's resize, as the pipeline does),
in CPU seconds of this process (`time.process_time`: the load of other jobs does not count). pillow-simd
replaces Pillow, so it is measured by running this script in a venv where it is installed: the `PIL` line
then says which Pillow it is.
"""
from __future__ import annotations

import argparse
import glob
import io
import os
import time
from collections.abc import Callable

import numpy as np
import PIL
from PIL import Image

from phenolip_jax.data.images import random_resized_crop_box


def jpeg_bytes(args: argparse.Namespace) -> list[bytes]:
    """The benchmark's JPEGs: real images from --images, else generated ones."""
    rng = np.random.default_rng(0)
    if args.images:
        files = sorted(glob.glob(os.path.join(args.images, "*")))[: args.n]
        if not files:
            raise SystemExit(f"--images={args.images!r} holds no files")
        sources = [Image.open(f).convert("RGB") for f in files]
    else:
        yy, xx = np.mgrid[0:512, 0:512] / 512.0
        sources = []
        for _ in range(args.n):
            base = np.stack([np.sin(xx * rng.uniform(2, 9) + rng.uniform(0, 6)) * np.cos(yy * rng.uniform(2, 9))
                             for _ in range(3)], -1)
            arr = np.clip((base * 0.5 + 0.5) * 255 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            sources.append(Image.fromarray(arr))
    out = []
    for img in sources:
        s = args.source_px / min(img.size)
        img = img.resize((max(args.source_px, round(img.width * s)), max(args.source_px, round(img.height * s))),
                         Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=args.quality)
        out.append(buf.getvalue())
    return out


def pil_decode(data: bytes) -> np.ndarray:
    """Pillow (libjpeg-turbo inside the wheel)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def simplejpeg_decode(data: bytes) -> np.ndarray:
    """simplejpeg: libjpeg-turbo's decoder straight into a numpy array."""
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def crop(rgb: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The pipeline's random resized crop (scale 0.9-1, bicubic) to size x size."""
    box = random_resized_crop_box(rgb.shape[0], rgb.shape[1], rng, (0.9, 1.0))
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC, box=box))


def rate(fn: Callable[[bytes], np.ndarray], blobs: list[bytes], size: int, with_crop: bool, repeats: int) -> float:
    """Images per CPU second (best of `repeats` passes over the blobs)."""
    best = float("inf")
    for r in range(repeats):
        rng = np.random.default_rng(r)
        start = time.process_time()
        for b in blobs:
            rgb = fn(b)
            if with_crop:
                crop(rgb, size, rng)
        best = min(best, time.process_time() - start)
    return len(blobs) / best


def main() -> None:
    """Time every decoder that imports here and print images per CPU second with the ratio to Pillow."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="", help="folder of real images (default: generated ones)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--source_px", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    blobs = jpeg_bytes(args)
    simd = "simd" in PIL.__version__ or "post" in PIL.__version__
    print(f"{len(blobs)} JPEGs ({'from ' + args.images if args.images else 'generated'}), shorter side "
          f"{args.source_px}, quality {args.quality}, mean {np.mean([len(b) for b in blobs]) / 1024:.1f} KiB; "
          f"crop to {args.size}; load average {os.getloadavg()[0]:.1f}")
    decoders = {f"PIL {PIL.__version__}{' (pillow-simd)' if simd else ''}": pil_decode}
    try:
        import simplejpeg

        decoders[f"simplejpeg {simplejpeg.__version__}"] = simplejpeg_decode
    except ImportError:
        print("simplejpeg: not installed")
    base = None
    for name, fn in decoders.items():
        decode = rate(fn, blobs, args.size, False, args.repeats)
        full = rate(fn, blobs, args.size, True, args.repeats)
        base = base or full
        print(f"{name:<28} decode {decode:7.0f}/CPU s   decode + crop {full:7.0f}/CPU s   ({full / base:.2f}x PIL)")


if __name__ == "__main__":
    main()

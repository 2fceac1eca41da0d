"""Image files in, square uint8 arrays out: the per-image work of every ``prepare`` command (and of ``predict``).

- :func:`load_grayscale`: a DICOM, PNG or JPEG file as float32 (H, W) intensities in [0, 1]. A 16-bit
  grayscale PNG is scaled by its full 16-bit range, or, when its ``sBIT`` chunk declares fewer significant bits
  ``b`` and no value exceeds ``2**b - 1`` (values written unscaled, as 12-bit detector data often is), by
  ``2**b - 1``: the PNG counterpart of a DICOM's *BitsStored*.
- :func:`to_uint8_square`: float32 (H, W) in [0, 1] to uint8 (size, size): a centred square is cut out
  (``mode="crop"``, keeps the middle, loses the edges of the longer side) or the image is centred on a black
  square (``mode="pad"``, keeps everything, adds black bars), then resized with Pillow's Lanczos filter, whose
  support widens with the reduction factor so that downsampling is anti-aliased.
- :func:`prepare_image`: both steps for one file, taking the fast route (Pillow's reduced-scale JPEG decode)
  where it gives the same result, and returning a little information about the file as well.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from data_tools import dicom
from data_tools.dicom import ImageReadError
from data_tools.errors import InputError

logger = logging.getLogger(__name__)

SQUARE_MODES = ("crop", "pad")
DICOM_SUFFIXES = (".dcm", ".dicom")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = DICOM_SUFFIXES + PILLOW_SUFFIXES


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError("unreadable", f"{path}: cannot be read ({error.strerror or error})") from None
    if not data:
        raise ImageReadError("unreadable", f"{path}: empty file (0 bytes)")
    return data


def _pillow_reason(error: Exception) -> str:
    """Pillow's reason without its in-memory buffer's repr (``cannot identify image file <_io.BytesIO ...>``)."""
    if isinstance(error, Image.UnidentifiedImageError):
        return "no PNG or JPEG signature"
    return str(error)


def _is_dicom(path: Path, data: bytes) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or dicom.is_dicom_bytes(data)


def _open_pillow(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageReadError("unreadable", f"{name}: not a readable PNG/JPEG image ({_pillow_reason(error)})") from None
    return ImageOps.exif_transpose(image)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_significant_bits(data: bytes) -> int | None:
    """The ``sBIT`` value of a grayscale PNG held in ``data`` (bits per sample that carry information), or None
    when the file is not a grayscale PNG or has no ``sBIT`` chunk before its image data."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos = len(PNG_SIGNATURE)
    color_type = None
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 10:
            color_type = body[9]
        elif kind == b"sBIT" and color_type == 0 and len(body) >= 1:
            return int(body[0])
        elif kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length  # length, type, body, CRC
    return None


def _sixteen_bit_scale(values: np.ndarray, significant_bits: int | None) -> float:
    """The value that maps to 1.0 for 16-bit samples: 65535, or ``2**b - 1`` for unscaled ``b``-bit samples."""
    if significant_bits is not None and 0 < significant_bits < 16:
        top = 2.0**significant_bits - 1
        if values.size and float(values.max()) <= top:
            return top
    return 65535.0


def _pillow_to_unit(image: Image.Image, significant_bits: int | None = None) -> np.ndarray:
    """A Pillow image as float32 (H, W) in [0, 1]; 16-bit grayscale keeps its precision (scaled as the module
    docstring says, ``significant_bits`` being the PNG's ``sBIT``), colour becomes luminance."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit PNGs open as I;16 (or I in older Pillow). convert("L") would clip them at 255, never used here.
        values = np.asarray(image, dtype=np.float32)
        return np.clip(values / _sixteen_bit_scale(values, significant_bits), 0.0, 1.0)
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


def load_grayscale(path: str | Path, *, voi_lut: bool = False) -> np.ndarray:
    """Read a DICOM (by suffix ``.dcm``/``.dicom`` or by its ``DICM`` marker), PNG or JPEG file.

    Returns float32 (H, W) in [0, 1], bright = dense. Colour images become luminance. ``voi_lut`` applies a
    DICOM's VOI LUT or window (ignored for other files). Raises :class:`ImageReadError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if _is_dicom(path, data):
        return dicom.pixels_to_unit(dicom.parse_dicom(data, str(path)), voi_lut=voi_lut, name=str(path))
    return _pillow_to_unit(_open_pillow(data, str(path)), png_significant_bits(data))


def _check_mode(mode: str) -> None:
    if mode not in SQUARE_MODES:
        raise InputError(f"square mode {mode!r}: expected one of {', '.join(SQUARE_MODES)}")


def to_uint8_square(image: np.ndarray, size: int, *, mode: str = "crop") -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (size, size): centre crop or pad to a square, then anti-aliased resize."""
    _check_mode(mode)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image: expected a 2-D array (H, W), got shape {image.shape}")
    h, w = image.shape
    if mode == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[top : top + side, left : left + side]
    else:
        side = max(h, w)
        square = np.zeros((side, side), dtype=np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = image
    resized = Image.fromarray(np.ascontiguousarray(square)).resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.rint(np.asarray(resized) * 255.0), 0, 255).astype(np.uint8)


def _pillow_square_uint8(image: Image.Image, size: int, mode: str) -> np.ndarray:
    """An ``L`` Pillow image -> uint8 (size, size), same geometry as :func:`to_uint8_square`."""
    w, h = image.size
    if mode == "crop":
        side = min(h, w)
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS, box=box), dtype=np.uint8)
    side = max(h, w)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def prepare_image(path: str | Path, *, size: int, mode: str = "crop", voi_lut: bool = False) -> tuple[np.ndarray, dict]:
    """One file -> (uint8 (size, size), info). info: ``sha`` (hex digest of the file's bytes, to spot copies)
    and ``view`` (DICOM *ViewPosition*, empty when unknown).

    8-bit grayscale JPEG (as a file or as a DICOM's JPEG Baseline frame) is decoded by Pillow at a reduced DCT
    scale no smaller than ``size``; everything else goes through :func:`load_grayscale` and
    :func:`to_uint8_square`. Raises :class:`ImageReadError`.
    """
    _check_mode(mode)
    path = Path(path)
    data = _read_bytes(path)
    info = {"sha": hashlib.blake2b(data, digest_size=16).hexdigest(), "view": ""}
    if _is_dicom(path, data):
        ds = dicom.parse_dicom(data, str(path))
        info["view"] = str(ds.get("ViewPosition", "") or "").strip()
        if dicom.draft_eligible(ds, voi_lut=voi_lut):
            return _pillow_square_uint8(dicom.draft_jpeg_frame(ds, size, name=str(path)), size, mode), info
        return to_uint8_square(dicom.pixels_to_unit(ds, voi_lut=voi_lut, name=str(path)), size, mode=mode), info
    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG" and image.mode in ("L", "RGB", "YCbCr", "CMYK"):
            # Decoding only the luma at a reduced scale; the result matches convert("L") + resize closely.
            image.draft("L", (size, size))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageReadError("unreadable", f"{path}: not a readable PNG/JPEG image ({_pillow_reason(error)})") from None
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError("unreadable", f"{path}: image data could not be decoded ({_pillow_reason(error)})") from None
    image = ImageOps.exif_transpose(image)
    if image.mode == "L":
        return _pillow_square_uint8(image, size, mode), info
    return to_uint8_square(_pillow_to_unit(image, png_significant_bits(data)), size, mode=mode), info


def describe_preprocessing(size: int, mode: str = "crop", voi_lut: bool = False) -> dict:
    """The ``preprocessing`` record of ``meta.json`` for :func:`prepare_image` with these arguments."""
    _check_mode(mode)
    return {
        "size": size,
        "square": mode,
        "square_note": (
            "centre crop to the shorter side" if mode == "crop" else "centred on black, padded to the longer side"
        ),
        "resize": "Pillow Lanczos (anti-aliased)",
        "voi_lut": voi_lut,
        "intensity": (
            "DICOM: modality LUT or rescale slope/intercept, scaled by the BitsStored range"
            + (", VOI LUT or window" if voi_lut else "")
            + ", MONOCHROME1 inverted; PNG/JPEG: full scale of 8 or 16 bits (16-bit PNG: of its sBIT bits when unscaled); colour to luminance"
        ),
        "jpeg_draft": "8-bit grayscale JPEG decoded by Pillow at the smallest DCT scale >= size",
        "dtype": "uint8",
    }

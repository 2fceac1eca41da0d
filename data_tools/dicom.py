"""Reading one DICOM file into grayscale intensities in [0, 1].

The value pipeline follows the DICOM grayscale chain (PS3.3 C.11):

1. stored values from the pixel data (decoded by pydicom 3; JPEG Baseline by Pillow, JPEG Lossless and JPEG-LS
   by pylibjpeg-libjpeg, JPEG 2000 by Pillow, RLE and uncompressed by pydicom itself);
2. the modality transform: *Modality LUT Sequence* when present, else *Rescale Slope/Intercept* when present;
3. optionally (``voi_lut=True``) the VOI transform: *VOI LUT Sequence*, else *Window Center/Width*;
4. scaling to [0, 1] by the full range the previous step can produce: for stored values that is
   ``[0, 2**BitsStored - 1]`` (unsigned) or ``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]`` (signed), mapped
   through the modality transform; so the result does not depend on the image's own minimum and maximum;
5. ``MONOCHROME1`` (bright = low values) inverted so that bright always means dense, as in ``MONOCHROME2``.

Colour images (RGB, or YBR which pydicom converts to RGB) become luminance (ITU-R BT.601 weights).

:func:`draft_jpeg_frame` is the fast path for the common case of 8-bit JPEG Baseline grayscale (every RSNA
image): Pillow decodes the JPEG at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients, which is several
times faster than a full decode followed by a resize, and nearly the same image once resized.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
import warnings

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import JPEGBaseline8Bit

from data_tools.errors import InputError

logger = logging.getLogger(__name__)

LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageReadError(InputError):
    """One image that cannot be read; ``kind`` says why, for the failure report.

    kinds: ``unreadable`` (not an image file, truncated, decoder error), ``no-pixel-data``,
    ``unsupported-transfer-syntax``, ``unsupported-image`` (multi-frame, palette colour, odd sample layout).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def is_dicom_bytes(data: bytes) -> bool:
    """True when ``data`` carries the DICOM Part 10 preamble marker."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def parse_dicom(data: bytes, name: str = "<bytes>") -> pydicom.Dataset:
    """Parse a DICOM file held in memory; raise :class:`ImageReadError` when it is not one or is cut short."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # force=True also accepts files without the 128-byte preamble, which some exporters write.
            ds = pydicom.dcmread(io.BytesIO(data), force=not is_dicom_bytes(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as error:
        raise ImageReadError("unreadable", f"{name}: not a readable DICOM file ({error})") from None
    # pydicom reads a file cut short without raising: it warns and drops the element it could not finish.
    ended_early = [w for w in caught if "end of file" in str(w.message).lower() or "truncat" in str(w.message).lower()]
    if ended_early:
        raise ImageReadError("unreadable", f"{name}: truncated file ({ended_early[0].message})")
    if "PixelData" not in ds:
        if not is_dicom_bytes(data):
            raise ImageReadError("unreadable", f"{name}: not a DICOM file (no DICM marker, no pixel data)")
        if "Rows" in ds:  # an image's attributes without its pixels: most often a file cut short
            raise ImageReadError("no-pixel-data", f"{name}: DICOM with Rows and Columns but no PixelData element (the file may be cut short)")
        raise ImageReadError("no-pixel-data", f"{name}: DICOM without pixel data (no PixelData element)")
    if not ds.PixelData:
        raise ImageReadError("no-pixel-data", f"{name}: DICOM whose PixelData element is empty (the file may be cut short)")
    return ds


def check_native_size(ds: pydicom.Dataset, name: str) -> None:
    """Raise ``unreadable`` when uncompressed pixel data holds fewer bytes than Rows x Columns x samples x frames
    at BitsAllocated need (pydicom's own message names neither the attributes nor the likely cause)."""
    if transfer_syntax(ds).is_compressed:
        return
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 8)
    frames = int(ds.get("NumberOfFrames") or 1)
    needed = -(-rows * columns * samples * frames * bits // 8)
    if len(ds.PixelData) < needed:
        raise ImageReadError(
            "unreadable",
            f"{name}: pixel data holds {len(ds.PixelData)} bytes where Rows {rows} x Columns {columns} x {samples} "
            f"sample(s) of {bits} bits need {needed} (the file may be cut short, or Rows/Columns/BitsAllocated are wrong)",
        )


def transfer_syntax(ds: pydicom.Dataset) -> pydicom.uid.UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    # A file without meta information is implicit VR little endian by the standard's default.
    return pydicom.uid.UID(uid) if uid else pydicom.uid.ImplicitVRLittleEndian


def check_decodable(ds: pydicom.Dataset, name: str) -> None:
    """Raise ``unsupported-transfer-syntax`` when no installed plugin decodes this file's pixel data."""
    from pydicom.pixels.decoders.base import get_decoder

    uid = transfer_syntax(ds)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise ImageReadError(
            "unsupported-transfer-syntax", f"{name}: transfer syntax {uid} ({uid.name}) has no pixel data decoder"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise ImageReadError(
            "unsupported-transfer-syntax",
            f"{name}: transfer syntax {uid} ({uid.name}) needs a decoder that is not installed ({missing})",
        )


@functools.lru_cache(maxsize=1)
def _pillow_decodes_baseline() -> bool:
    from pydicom.pixels.decoders import JPEGBaseline8BitDecoder

    return "pillow" in JPEGBaseline8BitDecoder.available_plugins


def _stored_range(ds: pydicom.Dataset) -> tuple[float, float]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _modality(values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, float, float]:
    """Apply the modality transform; return the values and the range they can span."""
    lo, hi = _stored_range(ds)
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return apply_modality_lut(values, ds).astype(np.float32), 0.0, 2.0**depth - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None and intercept is None:
        return values.astype(np.float32), lo, hi
    slope = float(slope if slope is not None else 1.0)
    intercept = float(intercept if intercept is not None else 0.0)
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return values.astype(np.float32) * np.float32(slope) + np.float32(intercept), ends[0], ends[1]


def _first(value) -> float:
    """Window Center/Width may hold several alternatives; the first is the default one."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(value)


def _voi(values: np.ndarray, ds: pydicom.Dataset, lo: float, hi: float) -> tuple[np.ndarray, float, float]:
    """Apply the VOI transform when the file has one; return the values and their possible range."""
    if ds.get("VOILUTSequence"):
        from pydicom.pixels import apply_voi

        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        integral = np.round(values).astype(np.int64)
        return apply_voi(integral, ds).astype(np.float32), 0.0, 2.0**depth - 1
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        if function == "SIGMOID":
            out = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
        elif function == "LINEAR_EXACT":
            out = (values - center) / max(width, 1e-6) + 0.5
        else:  # LINEAR, PS3.3 C.11.2.1.2.1
            out = (values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5
        return np.clip(out, 0.0, 1.0).astype(np.float32), 0.0, 1.0
    return values, lo, hi


def pixels_to_unit(ds: pydicom.Dataset, *, voi_lut: bool = False, name: str = "<dataset>") -> np.ndarray:
    """Decode a parsed dataset's pixels into float32 (H, W) in [0, 1], bright = dense (see module docstring)."""
    check_decodable(ds, name)
    check_native_size(ds, name)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise ImageReadError("unsupported-image", f"{name}: {frames} frames; expected a single-frame image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        raise ImageReadError("unsupported-image", f"{name}: palette colour images are not supported")
    if transfer_syntax(ds) == JPEGBaseline8Bit and _pillow_decodes_baseline():
        # With pylibjpeg also installed pydicom would pick it; Pillow is ~3x faster on baseline JPEG and differs
        # by at most one grey level (two IDCT implementations).
        ds.pixel_array_options(decoding_plugin="pillow")
    try:
        values = ds.pixel_array
    except (ValueError, OSError, EOFError, RuntimeError, KeyError, AttributeError, TypeError) as error:
        raise ImageReadError("unreadable", f"{name}: pixel data could not be decoded ({error})") from None
    if values.ndim == 3 and values.shape[-1] == 3:
        # pydicom has already turned YBR into RGB; colour never carries rescale or windowing for X-rays.
        gray = values.astype(np.float32) @ LUMINANCE
        hi = 2.0 ** int(ds.get("BitsStored") or 8) - 1
        return np.clip(gray / hi, 0.0, 1.0).astype(np.float32)
    if values.ndim != 2:
        raise ImageReadError(
            "unsupported-image", f"{name}: pixel array of shape {values.shape}; expected (rows, columns)"
        )
    values, lo, hi = _modality(values, ds)
    if voi_lut:
        values, lo, hi = _voi(values, ds, lo, hi)
    image = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return image


def draft_eligible(ds: pydicom.Dataset, *, voi_lut: bool) -> bool:
    """True when the fast Pillow draft decode gives the same intensities as :func:`pixels_to_unit`.

    That holds for a single-frame, single-sample 8-bit JPEG Baseline image whose modality transform is the
    identity (or absent) and when no VOI windowing is asked for.
    """
    if transfer_syntax(ds) != JPEGBaseline8Bit:
        return False
    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames") or 1) != 1:
        return False
    if int(ds.get("BitsStored", 8)) != 8 or int(ds.get("PixelRepresentation", 0)) != 0:
        return False
    if str(ds.get("PhotometricInterpretation", "")).upper() not in ("MONOCHROME1", "MONOCHROME2"):
        return False
    if ds.get("ModalityLUTSequence"):
        return False
    if float(ds.get("RescaleSlope", 1.0)) != 1.0 or float(ds.get("RescaleIntercept", 0.0)) != 0.0:
        return False
    if voi_lut and (ds.get("VOILUTSequence") or "WindowCenter" in ds):
        return False
    return True


def draft_jpeg_frame(ds: pydicom.Dataset, min_side: int, *, name: str = "<dataset>"):
    """Decode the JPEG frame of an eligible dataset with Pillow at the smallest DCT scale keeping both sides
    at least ``min_side`` pixels; return a Pillow ``L`` image (MONOCHROME1 already inverted).

    Call only when :func:`draft_eligible` is true.
    """
    from PIL import Image, ImageOps
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        image = Image.open(io.BytesIO(frame))
        image.draft("L", (min_side, min_side))
        image.load()
    except (OSError, ValueError, StopIteration, SyntaxError) as error:
        raise ImageReadError("unreadable", f"{name}: JPEG pixel data could not be decoded ({error})") from None
    if image.mode != "L":
        image = image.convert("L")
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        image = ImageOps.invert(image)
    return image

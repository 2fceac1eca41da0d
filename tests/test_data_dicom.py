"""Reading DICOM, PNG and JPEG files into [0, 1] intensities, and the square uint8 resize."""

import numpy as np
import pytest
from data_helpers import phantom, shared_data_or_skip, stored_values, write_dicom, write_jpeg_rgb, write_png

from data_tools.dicom import ImageReadError
from data_tools.errors import InputError
from data_tools.imaging import load_grayscale, prepare_image, to_uint8_square
from data_tools.imaging import load_grayscale as read_dicom


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_uncompressed_scaled_by_bits_stored(tmp_path, bits, photometric):
    image = phantom(40, 56, seed=bits)
    stored = stored_values(image, bits)
    path = write_dicom(tmp_path / "a.dcm", stored, bits_stored=bits, photometric=photometric)
    out = read_dicom(path)
    expected = stored / (2**bits - 1)
    if photometric == "MONOCHROME1":
        expected = 1 - expected
    assert out.dtype == np.float32 and out.shape == (40, 56)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_signed_pixels_and_rescale(tmp_path):
    image = phantom(32, 32)
    stored = stored_values(image, 12) - 2048  # signed 12-bit: [-2048, 2047]
    signed = read_dicom(write_dicom(tmp_path / "s.dcm", stored, bits_stored=12, signed=True))
    np.testing.assert_allclose(signed, (stored + 2048) / 4095, atol=1e-6)
    # A linear rescale moves the range with the values: the [0, 1] image is the same.
    rescaled = read_dicom(write_dicom(tmp_path / "r.dcm", stored + 2048, bits_stored=12, rescale=(2.0, -1024.0)))
    np.testing.assert_allclose(rescaled, (stored + 2048) / 4095, atol=1e-6)


def test_voi_window_only_when_asked(tmp_path):
    stored = np.tile(np.arange(0, 4096, 16), (8, 1))  # 8 x 256 ramp over 12 bits
    path = write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, window=(1024.0, 512.0))
    plain = read_dicom(path)
    np.testing.assert_allclose(plain, stored / 4095, atol=1e-6)
    windowed = read_dicom(path, voi_lut=True)
    assert windowed[0, stored[0] <= 1024 - 256].max() == 0.0
    assert windowed[0, stored[0] >= 1024 + 256].min() == 1.0
    middle = (stored[0] > 800) & (stored[0] < 1250)
    np.testing.assert_allclose(windowed[0, middle], (stored[0, middle] - 1023.5) / 511 + 0.5, atol=1e-5)


def test_jpeg_baseline_fast_path_matches_full_decode(tmp_path):
    image = phantom(300, 260, seed=3)
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        path = write_dicom(tmp_path / f"{photometric}.dcm", stored_values(image, 8), jpeg=True, photometric=photometric)
        full = read_dicom(path)
        target = image if photometric == "MONOCHROME2" else 1 - image
        assert np.abs(full - target).mean() * 255 < 2  # JPEG quality 95
        for mode in ("crop", "pad"):
            fast, info = prepare_image(path, size=64, mode=mode)
            slow = to_uint8_square(full, 64, mode=mode)
            assert fast.dtype == np.uint8 and fast.shape == (64, 64)
            assert np.abs(fast.astype(int) - slow).mean() < 2
            assert info["view"] == "PA" and len(info["sha"]) == 32


def test_crop_and_pad_geometry():
    image = np.zeros((100, 200), dtype=np.float32)
    image[:, 100:] = 1.0  # left half black, right half white
    cropped = to_uint8_square(image, 50, mode="crop")  # keeps columns 50..150: still half and half
    assert cropped.shape == (50, 50)
    assert cropped[:, :20].max() == 0 and cropped[:, 30:].min() == 255
    padded = to_uint8_square(image, 50, mode="pad")  # 200 x 200, bars of 50 rows above and below
    assert padded[:10].max() == 0 and padded[-10:].max() == 0
    assert padded[20:30, 30:].min() == 255
    with pytest.raises(InputError, match="square mode"):
        to_uint8_square(image, 50, mode="stretch")


def test_resize_is_anti_aliased():
    # A one-pixel checkerboard averages to grey; point sampling would give black or white.
    checker = (np.indices((256, 256)).sum(axis=0) % 2).astype(np.float32)
    small = to_uint8_square(checker, 32)
    assert abs(float(small.mean()) - 127.5) < 3 and small.std() < 3


@pytest.mark.parametrize("kind", ["png8", "png16", "jpeg_rgb"])
def test_load_grayscale_pillow_files(tmp_path, kind):
    image = phantom(30, 40, seed=1)
    if kind == "png8":
        path, tol = write_png(tmp_path / "a.png", image), 0.5 / 255
    elif kind == "png16":
        path, tol = write_png(tmp_path / "a.png", image, bits=16), 0.5 / 65535
    else:
        path, tol = write_jpeg_rgb(tmp_path / "a.jpg", image), 4 / 255
    out = load_grayscale(path)
    assert out.dtype == np.float32 and out.shape == (30, 40)
    assert np.abs(out - image).mean() <= tol + 1e-6
    fast, _ = prepare_image(path, size=24)
    assert np.abs(fast.astype(int) - to_uint8_square(out, 24)).mean() < 2


def test_bad_files_name_the_reason(tmp_path):
    stored = stored_values(phantom(32, 32), 8)
    good = write_dicom(tmp_path / "good.dcm", stored, jpeg=True)
    data = good.read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "garbage.dcm").write_bytes(b"\x00\x01 not a dicom at all " * 40)
    write_dicom(tmp_path / "nopixels.dcm", stored, with_pixels=False)
    write_dicom(tmp_path / "mpeg.dcm", stored, jpeg=True, transfer_syntax="1.2.840.10008.1.2.4.100")
    expected = {
        "truncated.dcm": "unreadable",
        "garbage.dcm": "unreadable",
        "nopixels.dcm": "no-pixel-data",
        "mpeg.dcm": "unsupported-transfer-syntax",
        "missing.dcm": "unreadable",
    }
    for name, kind in expected.items():
        with pytest.raises(ImageReadError) as caught:
            prepare_image(tmp_path / name, size=16)
        assert caught.value.kind == kind, (name, str(caught.value))
        assert name in str(caught.value)
        assert isinstance(caught.value, InputError)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.raises(ImageReadError, match="broken.png"):
        load_grayscale(tmp_path / "broken.png")


def test_uncompressed_dicoms_cut_short_or_mislabelled_say_so(tmp_path):
    from pydicom import dcmread

    plain = write_dicom(tmp_path / "plain.dcm", stored_values(phantom(16, 16), 8))
    data = plain.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-40])  # inside the pixel data
    (tmp_path / "header-only.dcm").write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])  # before the PixelData tag
    ds = dcmread(plain)
    ds.Rows = 64
    ds.save_as(tmp_path / "rows.dcm")
    ds = dcmread(plain)
    ds.PixelData = b""
    ds.save_as(tmp_path / "empty.dcm")
    expected = {
        "cut.dcm": ("unreadable", "pixel data holds 216 bytes where Rows 16 x Columns 16 x 1 sample(s) of 8 bits need 256"),
        "rows.dcm": ("unreadable", "pixel data holds 256 bytes where Rows 64 x Columns 16"),
        "header-only.dcm": ("no-pixel-data", "Rows and Columns but no PixelData element (the file may be cut short)"),
        "empty.dcm": ("no-pixel-data", "PixelData element is empty"),
    }
    for name, (kind, fragment) in expected.items():
        with pytest.raises(ImageReadError) as caught:
            load_grayscale(tmp_path / name)
        assert caught.value.kind == kind, (name, str(caught.value))
        assert str(caught.value).startswith(str(tmp_path / name)) and fragment in str(caught.value), str(caught.value)


def test_real_monochrome1_is_the_inverse_of_monochrome2():
    folder = shared_data_or_skip("dicom-extra")
    one = prepare_image(folder / "siim_pneumothorax_monochrome1.dcm", size=225)[0].astype(float)
    two = prepare_image(folder / "siim_pneumothorax_monochrome2.dcm", size=225)[0].astype(float)
    assert np.corrcoef(one.ravel(), two.ravel())[0, 1] < -0.999
    full_one = read_dicom(folder / "siim_pneumothorax_monochrome1.dcm")
    full_two = read_dicom(folder / "siim_pneumothorax_monochrome2.dcm")
    np.testing.assert_allclose(full_one, 1 - full_two, atol=1e-6)


def test_real_rsna_fast_path_close_to_full_decode():
    folder = shared_data_or_skip("rsna", "stage_2_train_images")
    for path in sorted(folder.glob("*.dcm"))[:4]:
        fast, info = prepare_image(path, size=225)
        slow = to_uint8_square(read_dicom(path), 225)
        assert np.abs(fast.astype(int) - slow).mean() < 2
        assert info["view"] in ("AP", "PA")


def test_rle_lossless_12_bit(tmp_path):
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    image = phantom(24, 30, seed=5)
    path = write_dicom(tmp_path / "plain.dcm", stored_values(image, 12), bits_stored=12)
    ds = dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_allclose(read_dicom(tmp_path / "rle.dcm"), stored_values(image, 12) / 4095, atol=1e-6)

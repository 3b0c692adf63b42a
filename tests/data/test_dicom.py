"""DICOM input (issue 28 item 2): files written here with pydicom, read wherever an image is read."""
import io

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid  # noqa: E402

from phenolip_jax.data import dicom, images  # noqa: E402
from phenolip_jax.data.records import Record, validate_records  # noqa: E402


def dicom_bytes(stored: np.ndarray, *, photometric="MONOCHROME2", slope=1.0, intercept=-1024.0, window=(40, 400),
                syntax=ExplicitVRLittleEndian, pixel_data=None) -> bytes:
    """A CT DICOM file of `stored` values (uint16 [H, W] or [F, H, W])."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixel_data if pixel_data is not None else stored.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def expected(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    lo = centre - width / 2
    return np.clip(np.rint((hu - lo) / width * 255), 0, 255).astype(np.uint8)


STORED = np.array([[0, 1000, 1024, 1064], [1224, 1500, 2024, 4000]], np.uint16)
HU = STORED.astype(np.float64) - 1024


def test_ct_is_rescaled_and_shown_in_its_own_window():
    rgb, mode = images.decode_rgb(dicom_bytes(STORED))
    assert mode == "DICOM" and rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], expected(HU, 40, 400))
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_window_override_preset_or_numbers_and_no_window_uses_the_full_range(monkeypatch):
    data = dicom_bytes(STORED)
    np.testing.assert_array_equal(dicom.decode_dicom(data, window="lung")[..., 0], expected(HU, -600, 1500))
    np.testing.assert_array_equal(dicom.decode_dicom(data, window="100,50")[..., 0], expected(HU, 100, 50))
    monkeypatch.setenv(dicom.WINDOW_ENV, "bone")  # what configure() sets for a run and its workers
    np.testing.assert_array_equal(images.decode_rgb(data)[0][..., 0], expected(HU, 400, 1800))
    full = dicom.decode_dicom(dicom_bytes(STORED, window=None), window="")[..., 0]
    assert full.min() == 0 and full.max() == 255
    with pytest.raises(dicom.DicomError, match="lung, mediastinum"):
        dicom.parse_window("lungs")


def test_monochrome1_is_inverted():
    plain = dicom.decode_dicom(dicom_bytes(STORED), window="")
    inverted = dicom.decode_dicom(dicom_bytes(STORED, photometric="MONOCHROME1"), window="")
    np.testing.assert_array_equal(inverted, 255 - plain)


def test_multi_frame_takes_the_middle_frame_unless_told():
    frames = np.stack([STORED, STORED + 100, STORED + 200])
    data = dicom_bytes(frames)
    np.testing.assert_array_equal(dicom.decode_dicom(data, window="", frame=-1),
                                  dicom.decode_dicom(dicom_bytes(STORED + 100), window="", frame=-1))
    np.testing.assert_array_equal(dicom.decode_dicom(data, window="40,400", frame=0)[..., 0], expected(HU, 40, 400))
    with pytest.raises(dicom.DicomError, match="frame 5 asked for, the file has 3"):
        dicom.decode_dicom(data, window="", frame=5)


def test_compressed_without_a_decoder_names_the_package_and_bad_files_are_dropped(tmp_path):
    from pydicom.encaps import encapsulate

    packed = dicom_bytes(STORED, syntax=JPEGLSLossless, pixel_data=encapsulate([b"\xff\xd8not jpeg-ls"]))
    with pytest.raises(images.ImageDecodeError, match="compressed DICOM.*pip install pylibjpeg"):
        images.decode_rgb(packed)
    good = dicom_bytes(STORED)
    (tmp_path / "ok.dcm").write_bytes(good)
    (tmp_path / "packed.dcm").write_bytes(packed)
    (tmp_path / "broken.dcm").write_bytes(good[:132] + b"\x00" * 40)  # the marker, then nonsense
    recs = [Record(f"{n}.dcm", f"caption {n}", ("HP:0001250",), split="train", line=i + 1)
            for i, n in enumerate(("ok", "packed", "broken"))]
    kept, report = validate_records(recs, _onto(), str(tmp_path))
    assert [r.image for r in kept] == ["ok.dcm"] and report.counts["corrupt_image"] == 2
    assert report.counts["converted"] == 1 and "DICOM" in " ".join(report.examples["converted"])
    assert any("pylibjpeg" in e for e in report.examples["corrupt_image"])


def _onto():
    from phenolip_jax.ontology import load_ontology

    return load_ontology()


def test_folders_list_dicom_files(tmp_path):
    from phenolip_jax.evaluate.predict import list_images

    (tmp_path / "a.dcm").write_bytes(dicom_bytes(STORED))
    (tmp_path / "b.txt").write_text("no")
    assert [p.rsplit("/", 1)[1] for p in list_images(str(tmp_path))] == ["a.dcm"]


def test_configure_refuses_a_bad_window_and_sets_the_environment(monkeypatch):
    monkeypatch.delenv(dicom.WINDOW_ENV, raising=False)
    with pytest.raises(dicom.DicomError):
        dicom.configure("nonsense")
    dicom.configure("brain", 0)
    import os

    assert os.environ[dicom.WINDOW_ENV] == "brain" and os.environ[dicom.FRAME_ENV] == "0"
    monkeypatch.delenv(dicom.WINDOW_ENV)
    monkeypatch.delenv(dicom.FRAME_ENV)


def test_a_bad_window_in_a_config_names_the_field():
    import ml_collections

    with pytest.raises(ValueError, match="^config.data.dicom_window='lungs': DICOM window"):
        dicom.configure_from(ml_collections.ConfigDict(dict(dicom_window="lungs", dicom_frame=-1)), "config.data")

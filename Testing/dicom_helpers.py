"""Test helpers: DICOM datasets built with pydicom for the readers' tests (written with ``save_as(...,
enforce_file_format=True)``)."""
from __future__ import annotations

from typing import Any, Optional

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def dicom_dataset(sop_class: str = MR_STORAGE, instance_uid: Optional[str] = None) -> Dataset:
    """An empty dataset with its file meta (explicit VR little endian) and SOP class and instance UIDs (a new
    instance UID unless given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def mr_image(sop_class: str, rows: int, columns: int, manufacturer: str, field_strength: str,
             bits_stored: int = 16) -> Dataset:
    """An MR image without pixel data: :func:`dicom_dataset` with modality, manufacturer, field strength (a DS
    string, tesla) and one-sample unsigned 16-bit pixels of which ``bits_stored`` are used."""
    ds = dicom_dataset(sop_class)
    ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", manufacturer, field_strength
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    return ds


def item(**attributes: Any) -> Dataset:
    """A sequence item with these attributes."""
    ds = Dataset()
    for k, v in attributes.items():
        setattr(ds, k, v)
    return ds


__all__ = ["ENHANCED_MR_STORAGE", "MR_STORAGE", "dicom_dataset", "item", "mr_image"]

"""Decompression bombs: small files that declare huge images, one per decoder path.

Built without ever holding the declared pixels in memory (streamed deflate, hand-written headers),
so tests and benchmarks/serve_adversarial.py can make 13000 x 13000 bombs cheaply.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """A complete, valid 8-bit grayscale PNG of zeros (13000^2: ~170 KB on disk, 169 MB decoded)."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    rows_per_piece = max(1, (8 << 20) // len(row))
    parts = []
    for start in range(0, height, rows_per_piece):
        parts.append(compressor.compress(row * min(rows_per_piece, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _small_jpeg(size: int = 16) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (size, size), 128).save(buffer, format="JPEG")
    return buffer.getvalue()


def jpeg_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """A small JPEG whose frame header (SOF0) declares width x height."""
    data = bytearray(_small_jpeg())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _dicom(rows: int, columns: int, transfer_syntax: str, pixel_data: bytes | None, bits: int = 8) -> bytes:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.PatientName = "Bomb^Test"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if pixel_data is not None:
        ds.PixelData = encapsulate([pixel_data]) if UID(transfer_syntax).is_encapsulated else pixel_data
        if UID(transfer_syntax).is_encapsulated:
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def dicom_header_bomb(rows: int = 14000, columns: int = 14000) -> bytes:
    """Uncompressed DICOM whose Rows x Columns are huge but whose PixelData is tiny."""
    return _dicom(rows, columns, "1.2.840.10008.1.2.1", b"\0" * 64)


def dicom_jpeg_bomb(rows: int = 13000, columns: int = 13000, header: tuple[int, int] | None = None) -> bytes:
    """JPEG Baseline DICOM; the codestream declares rows x columns, the DICOM header `header` (default the same)."""
    header_rows, header_columns = header or (rows, columns)
    return _dicom(header_rows, header_columns, "1.2.840.10008.1.2.4.50", jpeg_bomb(columns, rows))


def dicom_rle_bomb(rows: int = 13000, columns: int = 13000) -> bytes:
    """RLE Lossless DICOM of zeros: 2 bytes per 128 pixels (13000^2: 2.6 MB on disk, 169 MB decoded)."""
    full, rest = divmod(rows * columns, 128)
    segment = b"\x81\x00" * full + (bytes([257 - rest, 0]) if rest else b"")  # header byte -n: repeat the next byte n+1 times
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return _dicom(rows, columns, "1.2.840.10008.1.2.5", header + segment)


def dicom_deflate_bomb(rows: int = 14000, columns: int = 14000) -> bytes:
    """Deflated Explicit VR Little Endian DICOM of 16-bit zeros (14000^2: ~390 KB on disk, 392 MB inflated)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    plain = _dicom(rows, columns, "1.2.840.10008.1.2.1", None, bits=16)  # the dataset minus PixelData
    # Split after the meta group: the meta stays plain, the dataset is deflated (PS3.5 A.5).
    meta_end = 132 + 12 + struct.unpack("<I", plain[140:144])[0]
    file_meta = pydicom.dcmread(io.BytesIO(plain), stop_before_pixels=True).file_meta
    file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta_buffer = DicomBytesIO()
    meta_buffer.is_little_endian, meta_buffer.is_implicit_VR = True, False
    write_file_meta_info(meta_buffer, file_meta, enforce_standard=True)
    meta = plain[:132] + meta_buffer.getvalue()
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    size = rows * columns * 2
    parts = [compressor.compress(plain[meta_end:] + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size))]
    piece = bytes(8 << 20)
    for start in range(0, size, len(piece)):
        parts.append(compressor.compress(piece[: min(len(piece), size - start)]))
    parts.append(compressor.flush())
    return meta + b"".join(parts)


def small_radiograph_png(size: int = 64) -> bytes:
    from PIL import Image

    gradient = np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))
    buffer = io.BytesIO()
    Image.fromarray(gradient, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()

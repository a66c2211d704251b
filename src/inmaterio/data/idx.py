"""Reader of IDX files (the format of MNIST), gzip-compressed or raw.

An IDX file is::

    magic    4 bytes: 0x00 0x00 <dtype code> <number of dimensions n>
    dims     n big-endian uint32 sizes
    data     prod(dims) values of the dtype, big-endian, C order

with the dtype codes 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64 (0x0A is not assigned). A file whose name ends in
``.gz`` is decompressed first. Any problem (missing file, bad magic, unknown
dtype code, truncated header, data shorter or longer than the dimensions say)
raises :class:`~inmaterio.errors.ModelFileError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from inmaterio.errors import ModelFileError

__all__ = ["IDX_DTYPES", "read_idx"]

#: IDX dtype code -> numpy dtype (big-endian as stored in the file).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ModelFileError(f"IDX file '{path}' does not exist")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise ModelFileError(f"IDX file '{path}' cannot be read (corrupt gzip stream?): {err}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read the IDX file ``path`` (``.gz`` or raw) into an array of its dims, native byte order.

    Returns
    -------
    ``np.ndarray`` of shape ``dims`` and the file's dtype (uint8 for MNIST),
    in native byte order, writable.

    Raises
    ------
    ModelFileError
        Missing file, corrupt gzip stream, bad magic number, unknown dtype code,
        truncated header, or data size different from ``prod(dims)``; the
        message names the file and the problem.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ModelFileError(f"IDX file '{path}' is truncated: {len(raw)} bytes, the magic number alone needs 4")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise ModelFileError(f"IDX file '{path}' has a bad magic number 0x{raw[:4].hex()}: the first two bytes must be 0x0000")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ModelFileError(f"IDX file '{path}' has a bad magic number: unknown dtype code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ModelFileError(
            f"IDX file '{path}' is truncated: its header declares {ndim} dimension(s) ({header} bytes) "
            f"but the file has {len(raw)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise ModelFileError(
            f"IDX file '{path}' is truncated: dims {dims} of {dtype.name} need {expected} data bytes, found {got}"
        )
    if got > expected:
        raise ModelFileError(
            f"IDX file '{path}' has a size mismatch: dims {dims} of {dtype.name} need {expected} data bytes, "
            f"found {got} ({got - expected} extra)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)

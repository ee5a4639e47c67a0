"""Packed b-bit sign–magnitude weight codes: the storage format of weights in flash.

A code q in [-Qmax, Qmax] is stored as the b-bit field (sign << (b-1)) | |q| (sign = 1 for q < 0).
Each output channel's codes, in the kernel's reduction order, form one row: fields are packed
LSB-first into a little-endian bit stream, and each row is padded to a whole byte so a kernel can
start decoding any output channel at a byte offset. Storage = Σ_rows ceil(K·b/8) bytes.
"""
from __future__ import annotations

import numpy as np


def row_bytes(k: int, bits: int) -> int:
    return (k * bits + 7) // 8


def to_fields(codes: np.ndarray, bits: int) -> np.ndarray:
    c = codes.astype(np.int16)
    return ((c < 0).astype(np.uint16) << (bits - 1)) | np.abs(c).astype(np.uint16)


def from_fields(fields: np.ndarray, bits: int) -> np.ndarray:
    f = fields.astype(np.int16)
    mag = f & ((1 << (bits - 1)) - 1)
    return np.where(f >> (bits - 1), -mag, mag).astype(np.int8)


def pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """(O, ...) int8 codes → (O, row_bytes) uint8, one padded row per output channel."""
    rows = codes.reshape(codes.shape[0], -1)
    o, k = rows.shape
    fields = to_fields(rows, bits)
    bitplanes = ((fields[..., None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)  # (O, K, b)
    stream = bitplanes.reshape(o, k * bits)
    pad = row_bytes(k, bits) * 8 - k * bits
    stream = np.pad(stream, ((0, 0), (0, pad)))
    return np.packbits(stream, axis=1, bitorder="little")


def unpack_rows(packed: np.ndarray, bits: int, k: int) -> np.ndarray:
    """(O, row_bytes) uint8 → (O, K) int8 codes."""
    stream = np.unpackbits(packed, axis=1, bitorder="little")[:, :k * bits]
    bitplanes = stream.reshape(packed.shape[0], k, bits).astype(np.uint16)
    fields = (bitplanes << np.arange(bits, dtype=np.uint16)).sum(axis=2)
    return from_fields(fields, bits)

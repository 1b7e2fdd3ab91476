"""File bytes encrypted at rest: AES-256-GCM around the local file store.

The key comes from an environment variable named in the config (``trust.file_key_env``),
never from the store or the config file: a copy of the store and the file folder
without the key reveals no file content. A blob is a sequence of sealed chunks of
64 KiB plaintext each (the last one shorter), each ``nonce | ciphertext | tag`` with a
fresh random nonce; the blob's key and the chunk's index are authenticated data, so a
chunk cannot be moved within a blob or into another unnoticed. Fixed-size chunks keep
ranged reads (batch inputs) and appends (batch outputs) cheap: a read opens only the
chunks it covers; an append reseals only the last, partial chunk.

Not covered: dropping whole chunks from a blob's end (the file's size in the store is
the check), and training files, which jobs copy by path (refused while sealed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import AsyncIterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from verbund.errors import ConfigError, StoreError
from verbund.files._blobs import BlobWriter, LocalBlobStore, write_blob

__all__ = ["SealedBlobStore", "file_key"]

CHUNK = 64 * 1024
_NONCE, _TAG = 12, 16
_RECORD = CHUNK + _NONCE + _TAG
_AAD = b"verbund-file-v1\0"


def file_key(env: str) -> bytes | None:
    """The 32-byte key from ``$env`` (base64); None if the variable is unset."""
    raw = os.environ.get(env, "")
    if not raw:
        return None
    try:
        key = base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise ConfigError([("trust.file_key_env", f"${env}: not 32 bytes in base64")])
    return key


class _Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, blob: str, index: int, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plain, _aad(blob, index))

    def open(self, blob: str, index: int, record: bytes) -> bytes:
        try:
            return self._aead.decrypt(record[:_NONCE], record[_NONCE:], _aad(blob, index))
        except (InvalidTag, ValueError):
            raise StoreError(f"blob {blob}: chunk {index} fails authentication") from None


def _aad(blob: str, index: int) -> bytes:
    return _AAD + blob.encode() + b"\0" + index.to_bytes(8, "big")


def _plain_size(stored: int) -> int:
    full, rem = divmod(stored, _RECORD)
    return full * CHUNK + (rem - _NONCE - _TAG if rem else 0)


class _SealedWriter:
    def __init__(self, inner: BlobWriter, sealer: _Sealer, key: str) -> None:
        self._inner = inner
        self._sealer = sealer
        self._key = key
        self._buf = bytearray()
        self._index = 0

    async def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= CHUNK:
            await self._emit(bytes(self._buf[:CHUNK]))
            del self._buf[:CHUNK]

    async def _emit(self, plain: bytes) -> None:
        await self._inner.write(self._sealer.seal(self._key, self._index, plain))
        self._index += 1

    async def commit(self) -> None:
        if self._buf:
            await self._emit(bytes(self._buf))
            self._buf.clear()
        await self._inner.commit()

    async def abort(self) -> None:
        await self._inner.abort()


class SealedBlobStore:
    """The :class:`~verbund.files.BlobStore` protocol over a local store, sealed."""

    def __init__(self, inner: LocalBlobStore, key: bytes) -> None:
        self._inner = inner
        self._sealer = _Sealer(key)
        self.root = inner.root

    def writer(self, key: str, data_class: str = "") -> BlobWriter:
        return _SealedWriter(self._inner.writer(key), self._sealer, key)

    async def put(self, key: str, data: bytes) -> None:
        await write_blob(self, key, data)

    async def append(self, key: str, data: bytes, data_class: str = "") -> int:
        return await asyncio.to_thread(self._append, self._inner.local_path(key), key, data)

    def _append(self, path: Path, key: str, data: bytes) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            stored = os.fstat(fd).st_size
            offset = _plain_size(stored)
            full, rem = divmod(stored, _RECORD)
            tail = b""
            if rem:  # reseal the partial last chunk together with the new bytes
                tail = self._sealer.open(key, full, os.pread(fd, rem, full * _RECORD))
            plain = tail + data
            out = b"".join(
                self._sealer.seal(key, full + i, plain[o : o + CHUNK])
                for i, o in enumerate(range(0, len(plain), CHUNK))
            )
            os.pwrite(fd, out, full * _RECORD)
            os.ftruncate(fd, full * _RECORD + len(out))
            os.fsync(fd)
        finally:
            os.close(fd)
        return offset

    async def read(self, key: str) -> AsyncIterator[bytes]:
        size = await self.size(key)
        index = 0
        while index * CHUNK < size:
            yield await asyncio.to_thread(self._chunk, key, index)
            index += 1

    def _chunk(self, key: str, index: int) -> bytes:
        path = self._inner.local_path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            record = os.pread(fd, _RECORD, index * _RECORD)
        finally:
            os.close(fd)
        return self._sealer.open(key, index, record)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        first, last = offset // CHUNK, (offset + length - 1) // CHUNK
        plain = b"".join(
            [await asyncio.to_thread(self._chunk, key, i) for i in range(first, last + 1)]
        )
        out = plain[offset - first * CHUNK : offset - first * CHUNK + length]
        if len(out) != length:
            raise StoreError(f"blob {key} is shorter than expected")
        return out

    async def size(self, key: str) -> int:
        return _plain_size(await self._inner.size(key))

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def keys(self, prefix: str) -> list[str]:
        return await self._inner.keys(prefix)

"""Checksummed file framing shared by the disk cache (:mod:`ftdfast.cache`) and saved Fisher files
(:meth:`ftdfast.FisherDiagonal.save`).

A framed file is ``magic``, then the line ``sha256 <64 hex> <len(body)>\n``, then the body. :func:`unframe` checks
every part and raises :class:`CorruptEntry` saying what is wrong, so a damaged file is never trusted.
"""
from __future__ import annotations

import hashlib


class CorruptEntry(Exception):
    """Raised by :func:`unframe` (and inside :meth:`ftdfast.Cache.load`) when a framed file fails its checks."""


def frame(body: bytes, magic: bytes) -> bytes:
    """``body`` with the integrity header: ``magic``, then ``sha256 <64 hex> <len(body)>\\n``."""
    return magic + f"sha256 {hashlib.sha256(body).hexdigest()} {len(body)}\n".encode("ascii") + body


def unframe(raw: bytes, magic: bytes) -> bytes:
    """The body of :func:`frame`'s output; :class:`CorruptEntry` saying what is wrong when a check fails."""
    if not raw:
        raise CorruptEntry("it is empty")
    if not raw.startswith(magic):
        raise CorruptEntry(f"it does not start with the header {magic.decode('ascii').strip()!r}")
    end = raw.find(b"\n", len(magic))
    if end < 0:
        raise CorruptEntry("its header is truncated")
    try:
        tag, digest, size = raw[len(magic):end].decode("ascii").split(" ")
        size = int(size)
    except (UnicodeDecodeError, ValueError):
        raise CorruptEntry("its checksum line is malformed") from None
    body = raw[end + 1:]
    if tag != "sha256":
        raise CorruptEntry(f"unknown checksum {tag!r}")
    if len(body) != size:
        raise CorruptEntry(f"it holds {len(body)} bytes where {size} were written (truncated?)")
    if hashlib.sha256(body).hexdigest() != digest:
        raise CorruptEntry("its sha256 checksum does not match")
    return body

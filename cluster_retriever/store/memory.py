"""Returning freed heap memory to the operating system after large writes."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_heap() -> None:
    """Give freed heap pages back to the OS (glibc only). An embedded Chroma write copies
    each document through Python and Rust and indexes its words; glibc keeps the freed
    pages, so without this a long build's resident memory grows with the corpus text
    (measured: 10k documents of 8.6 kB peaked 110 MB higher than of 1 kB)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)

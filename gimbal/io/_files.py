"""The one way gimbal.io picks a reader for a file: by suffix, with errors that name the file and the choices."""

from __future__ import annotations

from pathlib import Path

__all__ = ["reader_for"]


def reader_for(path, readers: dict, error: type[Exception], kind: str, formats: str):
    """``(path, reader)`` for an existing file whose suffix ``readers`` knows; else ``error`` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{kind} file {path} does not exist.")
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise error(f"{path}: unknown {kind} format {path.suffix!r}; {formats}.")
    return path, reader

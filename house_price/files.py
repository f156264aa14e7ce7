"""Writing user-facing files safely: whole or not at all, and never over an existing file by accident."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from house_price.errors import HousePriceError

if TYPE_CHECKING:
    import pandas as pd


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise HousePriceError(f"output folder '{folder}' does not exist; create it or choose another path")


def output_folder(path: str | os.PathLike) -> Path:
    """`path` as a report folder, created if needed inside a folder that must already exist."""
    folder = Path(path)
    _require_folder(folder.parent)
    folder.mkdir(exist_ok=True)
    return folder


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """`path` as a Path, after checking its folder exists and is writable and that it may be (over)written."""
    path = Path(path)
    folder = path.parent
    _require_folder(folder)
    if not os.access(folder, os.W_OK):
        raise HousePriceError(f"output folder '{folder}' is not writable; choose another path")
    if path.is_dir():
        raise HousePriceError(f"output path '{path}' is a directory; give a file name")
    if path.exists() and not overwrite:
        raise HousePriceError(
            f"output file '{path}' already exists; pass --overwrite to replace it or choose another path"
        )
    return path


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(temporary_path)` beside `path`, then rename it onto `path`: readers never see half a file."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        try:
            write(temporary)
        except RuntimeError as error:
            # torch's zip writer (torch.save) reports a full or failing disk as a RuntimeError, not an OSError:
            # "[enforce fail at inline_container.cc:...] . unexpected pos ..." or "... file write failed".
            if "inline_container" not in str(error):
                raise
            raise OSError(errno.ENOSPC, "the disk is full or failed while writing", str(path)) from None
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates 0600; end with the mode open() would give
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda temporary: Path(temporary).write_text(text))


@contextmanager
def table_writer(path: str | os.PathLike, parquet: bool) -> Iterator[Callable[[pd.DataFrame], None]]:
    """`append(frame)` that writes frames one after another to one CSV (header once) or one Parquet file."""
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None

        def append(frame: pd.DataFrame) -> None:
            nonlocal writer
            table = pa.Table.from_pandas(frame, preserve_index=False, schema=writer.schema if writer else None)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)

        try:
            yield append
        finally:
            if writer is not None:
                writer.close()
    else:
        with open(path, "w", newline="") as file:
            written = False

            def append(frame: pd.DataFrame) -> None:
                nonlocal written
                frame.to_csv(file, index=False, header=not written)
                written = True

            yield append

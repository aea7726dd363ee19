"""Where PyTensor keeps the Python source it generates for compiled functions, while a command runs.

PyTensor writes the source of each function it compiles (numba backend) to a file, which numba and tracebacks read
back. With no ``generated_src_dir`` set, every function gets a new file in the system temporary folder that nobody
removes: about 90 files per small ``gimbal fit``, tens of thousands after a test suite. :func:`generated_source_folder`
points PyTensor at one folder instead, where the files are content-addressed (a function compiled again reuses its file)
and PyTensor removes those unused for 31 days (its ``cmodule__age_thresh_use`` of 24 days plus a week), for this
process and, through ``PYTENSOR_FLAGS``, for the processes it starts (the diagnostic notebooks' kernels). A folder the
user set is left as it is.
"""

from __future__ import annotations

import os
import shlex
from contextlib import contextmanager
from pathlib import Path

__all__ = ["generated_source_folder"]


@contextmanager
def generated_source_folder(folder: str | Path | None = None):
    """Set PyTensor's ``generated_src_dir`` while the block runs, unless already set; put everything back after.

    Parameters
    ----------
    folder : path, optional
        Where the generated source goes; by default ``generated_src`` under PyTensor's ``base_compiledir`` (next to
        its compiled modules).

    Yields
    ------
    pathlib.Path or None
        The folder in use, or None where the user's own setting was kept.
    """
    import pytensor

    if pytensor.config.generated_src_dir:
        yield None
        return
    folder = Path(pytensor.config.base_compiledir, "generated_src") if folder is None else Path(folder)
    flags = os.environ.get("PYTENSOR_FLAGS")
    # PYTENSOR_FLAGS is split on commas by a POSIX shlex: quoted, a path keeps its backslashes and commas
    os.environ["PYTENSOR_FLAGS"] = ",".join(filter(None, [flags, f"generated_src_dir={shlex.quote(str(folder))}"]))
    try:
        with pytensor.config.change_flags(generated_src_dir=str(folder)):
            yield folder
    finally:
        if flags is None:
            os.environ.pop("PYTENSOR_FLAGS", None)
        else:
            os.environ["PYTENSOR_FLAGS"] = flags

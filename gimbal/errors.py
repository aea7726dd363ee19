"""Error kinds that decide the ``gimbal`` command's exit status.

* :class:`UsageError` - the command line asks for something impossible (an unknown dataset name, options that
  exclude each other, an output that exists without ``--overwrite``): exit status 2, like argparse's own errors.
* any other exception - the run failed: exit status 1, with the traceback kept in a log file.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """The command line or call asks for something that cannot be done as asked; nothing was run."""

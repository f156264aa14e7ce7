"""The package's own error type: a message a user can act on, shown as one line."""

import errno
import os
import signal
import sys
from collections.abc import Callable


class HousePriceError(Exception):
    """A problem with the user's input (data, config, checkpoint or path), with the fix in its message.

    The scripts print it as one line and exit with code 2; anything else is a bug and keeps its traceback.
    """


def exit_cleanly_on_error(main: Callable[[], None]) -> None:
    """Run a script's `main`; a `HousePriceError` (or Lightning's misconfiguration error, or a place it may not
    write to) becomes one line on stderr and exit code 2. Set HOUSE_PRICE_DEBUG=1 to see the full traceback instead.
    """
    try:
        main()
    except Terminated:
        print("terminated (SIGTERM): stopped; no output was left half-written", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        # Every output is written to a temporary file and renamed, so an interrupted command leaves nothing half-written.
        print("interrupted (Ctrl-C): stopped; no output was left half-written", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if os.environ.get("HOUSE_PRICE_DEBUG") == "1" or not _is_user_error(error):
            raise
        message = str(error)
        if isinstance(error, OSError):
            message = f"cannot write '{error.filename}' ({error.strerror}); choose a writable location for the outputs"
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a container stopping), raised where the command is, as Ctrl-C is: every `finally` runs, so
    a temporary output file is removed."""


def stop_on_sigterm() -> None:
    """Make SIGTERM stop this command as Ctrl-C does (`Terminated`), for commands that write outputs outside
    Lightning's fit (which handles SIGTERM itself)."""

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)


def _is_user_error(error: Exception) -> bool:
    if isinstance(error, OSError):
        return error.errno in _UNWRITABLE
    if isinstance(error, HousePriceError):
        return True
    # Lightning's own "you configured it wrong" error; looked up only if Lightning was loaded (it takes seconds).
    exceptions = sys.modules.get("lightning.fabric.utilities.exceptions")
    return exceptions is not None and isinstance(error, exceptions.MisconfigurationException)


_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)

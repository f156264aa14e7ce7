"""The package's own error type: a message a user can act on, shown as one line."""

import errno
import os
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
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        main()
    except (HousePriceError, MisconfigurationException, OSError) as error:
        if os.environ.get("HOUSE_PRICE_DEBUG") == "1" or (isinstance(error, OSError) and error.errno not in _UNWRITABLE):
            raise
        message = str(error)
        if isinstance(error, OSError):
            message = f"cannot write '{error.filename}' ({error.strerror}); choose a writable location for the outputs"
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)


_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)

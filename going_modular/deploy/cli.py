"""One convention for every command-line tool (training and serving wings alike).

Each module has `get_args_parser()` and `main(argv=None) -> int`, and ends with

    if __name__ == "__main__":
        sys.exit(cli.run(main))

`run` turns the errors a user can act on (a missing file, a bad bundle, bad data or arguments)
into one line, `error: ...`, and exit status 2, as argparse does for bad flags; anything else is a
bug and keeps its traceback. Ctrl-C exits with 130 and no traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from going_modular.deploy.bundle import BundleError
from going_modular.deploy.image import InvalidImageError

# RuntimeError subclasses of the training wing (DataError, CheckpointError, WeightsUnavailableError)
# are user-facing too; they are matched by name so this module never imports torch.
USER_ERRORS = (BundleError, InvalidImageError, ValueError, OSError)
USER_ERROR_NAMES = {"DataError", "CheckpointError", "WeightsUnavailableError", "BatchError", "StreamError",
                    "PackageError", "RedisStreamError"}
EXIT_USAGE = 2


def is_user_error(error: BaseException) -> bool:
    return isinstance(error, USER_ERRORS) or any(t.__name__ in USER_ERROR_NAMES for t in type(error).__mro__)


def run(main: Callable[[], int | None]) -> int:
    """Call main(); map user-facing errors to `error: ...` on stderr and exit status 2."""
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:  # filtered just below; the rest re-raised
        if not is_user_error(e):
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE

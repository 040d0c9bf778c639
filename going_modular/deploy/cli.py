"""One convention for every command-line tool (training and serving wings alike).

Each module has `get_args_parser()` and `main(argv=None) -> int`, and ends with

    if __name__ == "__main__":
        sys.exit(cli.run(main))

`run` turns the errors a user can act on (`errors.UserError` and its subclasses: a missing file,
a bad bundle, bad data or arguments) into one line, `error: ...`, and exit status 2, as argparse
does for bad flags; anything else is a bug and keeps its traceback. Ctrl-C exits with 130 and no
traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from going_modular.deploy.errors import UserError

EXIT_USAGE = 2


def run(main: Callable[[], int | None]) -> int:
    """Call main(); map user-facing errors to `error: ...` on stderr and exit status 2."""
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE

"""``python -m vibee``: the same as the ``vibee`` command."""

import sys

from vibee.cli import main

if __name__ == "__main__":
    sys.exit(main())

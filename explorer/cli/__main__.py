"""`python -m explorer.cli ...`: the same as the `explorer` command (and `python -m explorer`)."""

import sys

from explorer.cli import main

if __name__ == "__main__":
    sys.exit(main())

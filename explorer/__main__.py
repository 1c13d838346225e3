"""`python -m explorer ...`: the same as the `explorer` command (and what torchrun launches:
`torchrun --nproc_per_node=K -m explorer extract ...`)."""

import sys

from explorer.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m explorer ...`: the same as the `explorer` command (and what torchrun launches:
`torchrun --nproc_per_node=K -m explorer extract ...`)."""

from explorer.cli import run

if __name__ == "__main__":
    run()

"""The one module of shared names and defaults, read by the CLI, the notebook API and the app.

Free of torch and of every other explorer module, so anything (the CLI's fast path included)
can import it. The defaults show the project's finding on the shipped model: the best linear
setting on validation in `assets/results/fashion-mnist-sweep.csv` is t=10, pool 2, block 7
(`mid_block`, the bottleneck; `default_block`).
"""

from __future__ import annotations

from collections.abc import Sequence

PRECISION_NAMES = ("fp32", "bf16", "fp16")  # `--dtype`: the compute precision, in the cache key
_PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def precision_name(name: str) -> str:
    """A `--dtype` value ("bf16", "bfloat16", ...) -> its canonical name; ExplorerError if unknown."""
    from explorer.errors import ExplorerError  # this module imports no other explorer module

    key = str(name).strip().lower()
    key = _PRECISION_ALIASES.get(key, key)
    if key not in PRECISION_NAMES:
        raise ExplorerError(
            f"unknown precision '{name}'; use --dtype fp32, bf16 or fp16 (or auto: bf16 on "
            "CUDA, fp32 on the CPU)"
        )
    return key


# --- names ---------------------------------------------------------------------------------------

POOLS = ("1", "2", "4", "8", "max", "map16")  # every pooling the extractor knows
APP_POOLS = POOLS  # the ones the app's selectors offer
POOL_LABELS = {
    "1": "1×1 avg",
    "2": "2×2 avg",
    "4": "4×4 avg",
    "8": "8×8 avg",
    "max": "global max",
    "map16": "map ≤16×16 (attention-paper)",
}
PIXELS = "pixels"  # pseudo-layer: the preprocessed image itself (a baseline)
PIXEL_POOL = "full"  # the pixel baseline's only "pooling"
RANDOM_PREFIX = "random:"  # "random:<model>": the same U-Net with random weights (a control)
ENCODER_PREFIX = "encoder:"  # "encoder:<folder>": a reference vision encoder (DINOv2, CLIP, ...)

# --- defaults --------------------------------------------------------------------------------------

DEFAULT_T = 10  # timestep of a single setting (Explore, Compare, Similarity, `explorer embed`)
DEFAULT_POOL = "2"
DEFAULT_HEAD = "linear"
DEFAULT_K = 20  # neighbours of the k-NN head (`knn` = `knn:k=20`)
DEFAULT_LAYER = "mid"  # CLI single-layer commands; the app starts on `default_block` instead
EXTRACT_TIMESTEPS = (DEFAULT_T, 90, 150)  # `explorer extract`
SWEEP_TIMESTEPS = (DEFAULT_T, 50, 90, 150, 300)  # `explorer sweep` (the shipped sweep's grid)
CKA_TIMESTEPS = (DEFAULT_T,)  # `explorer cka`: one t gives the block x block map
COMPARE_T2 = 500  # Compare's second timestep ("Two timesteps" mode)
DEFAULT_TRAIN_LIMIT = 2000  # app: images per split (class-balanced sample; 0 = whole split)
DEFAULT_TEST_LIMIT = 1000
SIMILARITY_IMAGES = (200, 500, 1000)  # Similarity: test images for CKA
DEFAULT_SIMILARITY_IMAGES = 500
SIMILARITY_TIMESTEPS = len(SWEEP_TIMESTEPS)  # how many of `timestep_defaults` the t x t map has
SWEEP_TIMESTEP_COUNT = len(SWEEP_TIMESTEPS)  # how many the Sweep page starts with


def timesteps_text(ts: Sequence[int]) -> str:
    """`(10, 90, 150)` -> `"10,90,150"` (the CLI's spelling)."""
    return ",".join(str(int(t)) for t in ts)


def default_t(num_timesteps: int) -> int:
    """`DEFAULT_T`, kept inside `[0, num_timesteps)` for models with few timesteps."""
    return max(0, min(DEFAULT_T, num_timesteps - 1))


def timestep_grid(num_timesteps: int) -> list[int]:
    """The app's one set of timesteps: the shipped sweep's grid (`SWEEP_TIMESTEPS`), scaled from
    a 1000-step schedule to `[0, T)`. Every page offers these as snapping marks (any other t is
    typed), the Sweep page plans them, and the warm seed holds them."""
    T = num_timesteps
    return sorted({min(T - 1, max(0, round(b * T / 1000))) for b in SWEEP_TIMESTEPS})


def timestep_defaults(num_timesteps: int, n: int = SWEEP_TIMESTEP_COUNT) -> list[int]:
    """The first `n` of `timestep_grid` (all of it by default)."""
    return timestep_grid(num_timesteps)[:n]


def compare_block(n_blocks: int) -> int:
    """Position of Compare's block B (block A is `default_block`): two blocks past the middle
    (block 9 of 13: the second up block of the shipped models)."""
    return min(n_blocks - 1, n_blocks // 2 + 2)


def default_block(stages: Sequence[str]) -> int:
    """Position of the app's first block among blocks of these stages ("down", "mid", "up"):
    the mid block (block 7 of the shipped models, best on validation), else the middle."""
    return stages.index("mid") if "mid" in stages else len(stages) // 2

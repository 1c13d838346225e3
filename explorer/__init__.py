"""Diffusion Feature Explorer: find where a diffusion U-Net keeps its best image features.

The core is plain Python and torch; the Streamlit app (`app.py`) and the CLI
(`explorer.cli`) are thin layers over it.
"""

from explorer.errors import ExplorerError

__all__ = ["ExplorerError"]
__version__ = "0.1.0"

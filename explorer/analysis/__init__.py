"""Analyses of cached features: linear CKA and 2-D embeddings (PCA, UMAP, aligned UMAP)."""

from explorer.analysis.cka import cka_matrix, linear_cka
from explorer.analysis.embed import aligned_umap, pca_embed, umap_embed

__all__ = ["aligned_umap", "cka_matrix", "linear_cka", "pca_embed", "umap_embed"]

"""Backbones wrapped as SpeechBrain-style lobes."""

from speechbrain_mambadapter.lobes.ast import AST, patch_grid, resize_position_embeddings

__all__ = ["AST", "patch_grid", "resize_position_embeddings"]

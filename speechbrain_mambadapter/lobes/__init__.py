"""Backbones wrapped as SpeechBrain-style lobes."""

from speechbrain_mambadapter.lobes.ast import AST, patch_grid, resize_position_embeddings, save_random_ast

__all__ = ["AST", "patch_grid", "resize_position_embeddings", "save_random_ast"]

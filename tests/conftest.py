"""Fixtures shared by the unit and integration tests."""

import pytest


@pytest.fixture(scope="session")
def tiny_ast_dir(tmp_path_factory):
    """A tiny random AST (2 layers, 32 wide, max_length=100, 128 mel bins) saved to a folder.

    Pass it as ``AST(source=tiny_ast_dir)`` or ``--pretrained_source=<dir>``; the folder is
    shared by the whole session, so treat it as read-only.
    """
    # Imported here so that test sessions without AST tests do not import transformers.
    from speechbrain_mambadapter.lobes.ast import save_random_ast

    return save_random_ast(tmp_path_factory.mktemp("tiny_ast"), max_length=100)

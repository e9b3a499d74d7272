"""tools/tiny_models.py: the random AST the tests and benchmarks load."""

import doctest

import torch

from tools import tiny_models
from tools.tiny_models import save_random_ast


def test_random_ast_is_seeded_leaves_the_global_rng_alone_and_moves_its_embeddings(tmp_path):
    from transformers import ASTModel

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = ASTModel.from_pretrained(save_random_ast(tmp_path / "a", seed=1)).embeddings
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    again = ASTModel.from_pretrained(save_random_ast(tmp_path / "b", seed=1)).embeddings
    other = ASTModel.from_pretrained(save_random_ast(tmp_path / "c", seed=2)).embeddings
    assert torch.equal(first.position_embeddings, again.position_embeddings)
    assert not torch.equal(first.position_embeddings, other.position_embeddings)
    # Not zero, as a fresh ASTModel's are, so that code resizing them can be tested.
    assert first.cls_token.abs().sum() > 0 and first.position_embeddings.abs().sum() > 0
    assert (tmp_path / "a" / "preprocessor_config.json").is_file()


def test_doctests():
    result = doctest.testmod(tiny_models, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0

"""Fixtures shared by the unit and integration tests."""

import pytest


@pytest.fixture(scope="session")
def tiny_ast_dir(tmp_path_factory):
    """A tiny random AST (2 layers, 32 wide, max_length=100, 128 mel bins) saved to a folder.

    Pass it as ``AST(source=tiny_ast_dir)`` or ``--pretrained_source=<dir>``; the folder is
    shared by the whole session, so treat it as read-only.
    """
    # Imported here so that test sessions without AST tests do not import transformers.
    from tools.tiny_models import save_random_ast

    return save_random_ast(tmp_path_factory.mktemp("tiny_ast"), max_length=100)


@pytest.fixture(scope="session")
def tiny_whisper_dir():
    """A tiny random Whisper (2+2 layers, 64 wide) with the real multilingual Whisper tokenizer,
    saved to a folder: ``Whisper(source=tiny_whisper_dir, ...)`` or ``--whisper_source=<dir>``.

    Built once into the user cache (``~/.cache/speechbrain_mambadapter``, or
    ``$SPEECHBRAIN_MAMBADAPTER_CACHE``) from the pinned ``openai-whisper`` sdist on PyPI; skipped
    only when that sdist cannot be downloaded. Treat the folder as read-only. A ``str``: SpeechBrain's
    Hugging Face wrappers call ``source.replace("/", "--")`` and fail on a ``Path``.
    """
    from tools.whisper_assets import WhisperAssetDownloadError, cached_tiny_whisper

    try:
        return str(cached_tiny_whisper())
    except WhisperAssetDownloadError as error:
        pytest.skip(f"Whisper's multilingual tokenizer is not available offline: {error}")

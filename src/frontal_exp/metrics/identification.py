"""Closed-set identification: rank of the true identity in a gallery, rank-k accuracy (CMC)."""

from __future__ import annotations

import numpy as np

from frontal_exp.metrics.similarity import cosine


def identity_scores(
    queries: np.ndarray, gallery: np.ndarray, gallery_ids: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Similarity of each query to each gallery IDENTITY (the best of its gallery images).

    Returns (n_queries, n_identities) scores and the identity of each column (sorted).
    Similarities are cosines (`metrics.similarity.cosine`), whatever the embeddings' norms.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    sims = np.atleast_2d(cosine(queries, gallery))
    names = sorted(set(gallery_ids))
    cols = np.asarray(gallery_ids)
    # a person with several gallery images is as close as their closest image
    out = np.stack([sims[:, cols == n].max(axis=1) for n in names], axis=1) if names else np.zeros((len(queries), 0))
    return out, names


def true_ranks(scores: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """1-based rank of each query's true gallery column.

    Rank = 1 + the number of columns scoring STRICTLY higher: a tie with the true identity
    does not cost rank (the gallery order would otherwise decide it).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    true_index = np.asarray(true_index, dtype=np.int64)
    true = scores[np.arange(len(true_index)), true_index]
    return 1 + (scores > true[:, None]).sum(axis=1)


def rank_k_accuracy(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose true identity is within the top k (nan for no queries)."""
    ranks = np.asarray(ranks)
    return float((ranks <= k).mean()) if ranks.size else float("nan")


def cmc(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: rank-k accuracy for k = 1 .. max_rank."""
    return np.array([rank_k_accuracy(ranks, k) for k in range(1, max_rank + 1)])

"""What the layout tests and the layout benchmark share: the quality measures (trustworthiness,
a kNN classifier on the layout) and the references (openTSNE, umap-learn) run on the same
input as tensor-surgeon: the rows reduced to their first 50 principal components."""

import numpy as np


def pca50(x: np.ndarray, dims: int = 50, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=min(dims, x.shape[1]), random_state=seed).fit_transform(x.astype(np.float64)).astype(np.float32)


def trustworthiness(x: np.ndarray, y: np.ndarray, k: int = 10, sample: int | None = 5000, seed: int = 0) -> float:
    """scikit-learn's trustworthiness (Venna & Kaski), over every point or a seeded sample of
    query points (the measure is a mean over points), without its n x n matrices."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    queries = np.arange(n) if sample is None or sample >= n else np.random.default_rng(seed).choice(n, sample, replace=False)
    near_y = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y[queries], return_distance=False)
    x = x.astype(np.float32)
    sq = (x.astype(np.float64) ** 2).sum(1)
    penalty = 0.0
    for start in range(0, len(queries), 512):
        q = queries[start : start + 512]
        d = sq[q][:, None] + sq[None, :] - 2.0 * (x[q].astype(np.float64) @ x.T.astype(np.float64))
        for row, i in enumerate(q):
            js = [j for j in near_y[start + row] if j != i][:k]
            dj = d[row, js]
            # Rank of j among i's input-space neighbours (1: the nearest; i itself is rank 0).
            ranks = (d[row][None, :] < dj[:, None]).sum(1)
            penalty += np.maximum(ranks - k, 0).sum()
    m = len(queries)
    return float(1.0 - 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)


def knn_accuracy(y: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote on the layout."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y, return_distance=False)[:, 1:]
    votes = labels[idx]
    predicted = np.array([np.bincount(v).argmax() for v in votes])
    return float((predicted == labels).mean())


def planted(clusters: int = 8, per: int = 250, dims: int = 64, seed: int = 1):
    """Gaussian clusters around random centres, with their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dims)) * 1.2
    x = np.concatenate([c + rng.normal(size=(per, dims)) * 0.35 for c in centres]).astype(np.float32)
    labels = np.repeat(np.arange(clusters), per)
    order = rng.permutation(len(x))
    return x[order], labels[order]


def opentsne(x50: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    from openTSNE import TSNE

    return np.asarray(TSNE(perplexity=perplexity, n_jobs=2, random_state=seed, initialization="pca").fit(x50))


def umap_learn(x50: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int | None = None) -> np.ndarray:
    import umap

    kwargs = {"random_state": seed} if seed is not None else {"n_jobs": 2}
    return umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, **kwargs).fit_transform(x50)

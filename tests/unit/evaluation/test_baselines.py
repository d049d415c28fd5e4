"""LSH and ITQ: ITQ's rotation lowers the quantisation loss of PCA-sign codes and helps retrieval."""

from __future__ import annotations

import numpy as np
import pytest

from orbithash.bits import pack_signs
from orbithash.evaluation.baselines import fit_itq, fit_lsh, pca, quantisation_loss
from orbithash.evaluation.metrics import mean_average_precision


def _clusters(n_per: int = 60, dim: int = 32, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3
    labels = np.repeat(np.arange(classes), n_per)
    return centres[labels] + rng.standard_normal((len(labels), dim)), labels


def test_itq_lowers_the_quantisation_loss_of_pca_sign_codes() -> None:
    x, _ = _clusters()
    base = pca(x, 8)
    itq = fit_itq(x, 8)
    v_pca = base.project(x)
    v_itq = itq.project(x)
    # Same PCA subspace, rotated: the norms of the projected points are unchanged.
    np.testing.assert_allclose(np.linalg.norm(v_pca, axis=1), np.linalg.norm(v_itq, axis=1), rtol=1e-9)
    assert quantisation_loss(v_itq) < 0.9 * quantisation_loss(v_pca)


def test_itq_rotation_is_orthogonal_and_more_iterations_never_hurt() -> None:
    x, _ = _clusters(seed=1)
    base = pca(x, 6)
    r = np.linalg.lstsq(base.projection, fit_itq(x, 6).projection, rcond=None)[0]
    np.testing.assert_allclose(r @ r.T, np.eye(6), atol=1e-8)
    losses = [quantisation_loss(fit_itq(x, 6, iterations=i).project(x)) for i in (1, 5, 50)]
    assert losses[0] >= losses[1] - 1e-9 >= losses[2] - 2e-9


def test_baselines_retrieve_clustered_data() -> None:
    x, y = _clusters()
    for fitted in (fit_itq(x, 16), fit_lsh(x, 16)):
        codes = fitted.encode(x)
        assert codes.shape == (len(x), 2)
        assert mean_average_precision(codes, y, codes, y, bits=16) > 0.6
    assert (fit_lsh(x, 16, seed=3).encode(x) == fit_lsh(x, 16, seed=3).encode(x)).all()  # seeded
    assert (fit_lsh(x, 16, seed=3).encode(x) != fit_lsh(x, 16, seed=4).encode(x)).any()
    assert (pack_signs(pca(x, 8).project(x)) == pca(x, 8).encode(x)).all()


def test_pca_refuses_more_bits_than_dimensions() -> None:
    x, _ = _clusters(dim=4)
    with pytest.raises(ValueError, match="PCA"):
        pca(x, 8)

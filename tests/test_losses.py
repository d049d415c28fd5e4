"""DHCNNLoss against a hand calculation, and the direction its gradient moves codes."""

from __future__ import annotations

import math

import pytest
import torch

from orbithash.losses import DHCNNLoss, binarise, similarity

U = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
LABELS = torch.tensor([0, 0, 1])
# Θ = u_i·u_j / 2: Θ12 = 1 (similar), Θ13 = −1 and Θ23 = −0.5 (dissimilar).
PAIR = (math.log1p(math.e) - 1 + math.log1p(math.exp(-1)) + math.log1p(math.exp(-0.5))) / 3
# b = [[1, −1], [1, 1], [−1, −1]] (0 counts as −1): (b − u)² sums to 1 + 1 + 0 + 0 + 0 + 1 over 6.
QUANT = 3 / 6


def test_pair_term_matches_hand_calculation() -> None:
    loss = DHCNNLoss(theta_scale=2.0, beta=0.0, eta=0.0)(U, LABELS)
    assert loss.item() == pytest.approx(PAIR, abs=1e-6)


def test_quantisation_and_classification_terms_are_weighted_by_beta_and_eta() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    ce = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(-3))) / 3
    loss = DHCNNLoss(theta_scale=2.0, beta=0.2, eta=0.25)(U, LABELS, logits)
    assert loss.item() == pytest.approx(0.75 * (PAIR + 0.2 * QUANT) + 0.25 * ce, abs=1e-6)


def test_theta_scale_divides_inner_products() -> None:
    u = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    loss = DHCNNLoss(theta_scale=4.0, beta=0.0, eta=0.0)(u, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(0.5)), abs=1e-6)  # Θ = 2 / 4, s = 0


@pytest.mark.parametrize(("labels", "toward"), [([3, 3], True), ([3, 4], False)])
def test_gradient_pulls_similar_codes_together_and_pushes_dissimilar_apart(labels: list[int],
                                                                          toward: bool) -> None:
    u = torch.tensor([[0.3, -0.2, 0.5], [0.4, 0.1, -0.3]], requires_grad=True)
    DHCNNLoss(beta=0.0, eta=0.0)(u, torch.tensor(labels)).backward()
    assert u.grad is not None
    step = -u.grad[0]  # the direction gradient descent moves u_0
    assert bool(step @ u[1].detach() > 0) is toward


def test_large_codes_give_finite_loss_and_gradient() -> None:
    u = torch.tensor([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4]], requires_grad=True)
    loss = DHCNNLoss(beta=0.1, eta=0.0)(u, torch.tensor([0, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all()
    assert loss.item() > 1e6  # the similar pair 0–1 points in opposite directions: a huge cost


def test_multi_hot_labels_are_similar_when_they_share_a_label() -> None:
    hot = torch.tensor([[1, 0, 1], [0, 0, 1], [0, 1, 0]])
    assert similarity(hot).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_binarise_matches_the_served_bit_rule() -> None:
    assert binarise(torch.tensor([0.5, 0.0, -0.1])).tolist() == [1.0, -1.0, -1.0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="labels"):
        DHCNNLoss()(U, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logits"):
        DHCNNLoss(eta=0.5)(U, LABELS)
    with pytest.raises(ValueError, match="eta"):
        DHCNNLoss(eta=1.5)

"""Every hashing loss against a hand calculation, and the direction its gradient moves codes."""

from __future__ import annotations

import math

import pytest
import torch

from orbithash.losses import (
    LOSSES,
    AuroraLoss,
    BaseHashLoss,
    DHCNNLoss,
    DPSHLoss,
    DSHLoss,
    binarise,
    make_loss,
    sign_gap,
    similarity,
    unit_l1_gap,
)

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


# --- DPSH, DSH, aurora and a contract every registered loss keeps -----------------------------

LOGITS = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
CE = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(-3))) / 3


def test_dpsh_is_the_pair_likelihood_without_a_classifier() -> None:
    assert DPSHLoss(beta=0.0)(U, LABELS).item() == pytest.approx(PAIR, abs=1e-6)
    assert DPSHLoss(beta=0.2)(U, LABELS).item() == pytest.approx(PAIR + 0.2 * QUANT, abs=1e-6)


def test_dsh_matches_hand_calculation() -> None:
    # D = ‖u_i − u_j‖²: D12 = 2 (similar), D13 = 9 and D23 = 5 (dissimilar). With m = 10:
    # ½·2, ½·max(10 − 9, 0), ½·max(10 − 5, 0) → (1 + 0.5 + 2.5) / 3. ‖|u| − 1‖₁ per item: 2, 0, 1.
    assert DSHLoss(margin=10.0, alpha=0.0)(U, LABELS).item() == pytest.approx(4 / 3, abs=1e-6)
    assert DSHLoss(margin=10.0, alpha=0.5)(U, LABELS).item() == pytest.approx(4 / 3 + 0.5 * 1.0, abs=1e-6)


def test_dsh_margin_defaults_to_twice_the_code_length() -> None:
    # K = 2 → m = 4: both dissimilar pairs lie beyond it, only the similar pair costs ½·2.
    assert DSHLoss(alpha=0.0)(U, LABELS).item() == pytest.approx(1 / 3, abs=1e-6)


def test_aurora_adds_the_weighted_classifier_to_the_hashing_terms() -> None:
    loss = AuroraLoss(class_weight=2.0, beta=0.2)(U, LABELS, LOGITS)
    assert loss.item() == pytest.approx(PAIR + 0.2 * QUANT + 2.0 * CE, abs=1e-6)
    smoothed = AuroraLoss(class_weight=1.0, beta=0.0, label_smoothing=0.1)(U, LABELS, LOGITS)
    assert smoothed.item() > PAIR + CE  # smoothing charges the confident, correct logits
    with pytest.raises(ValueError, match="logits"):
        AuroraLoss()(U, LABELS)


def _hashing_only(method: str) -> BaseHashLoss:
    off = {"aurora": {"class_weight": 0.0, "beta": 0.0}, "dsh": {"alpha": 0.0}}
    params = off.get(method, {"beta": 0.0, "eta": 0.0})
    return make_loss(method, **params)


@pytest.mark.parametrize("method", sorted(LOSSES))
@pytest.mark.parametrize(("labels", "closer"), [([3, 3], True), ([3, 4], False)])
def test_every_loss_moves_similar_codes_closer_and_dissimilar_apart(method: str, labels: list[int],
                                                                    closer: bool) -> None:
    u = torch.tensor([[0.3, -0.2, 0.5], [0.4, 0.1, -0.3]], requires_grad=True)
    _hashing_only(method)(u, torch.tensor(labels)).backward()
    assert u.grad is not None
    step = -u.grad[0]
    gap = (u[0] - u[1]).detach()
    assert bool(step @ gap < 0) is closer  # d/dt ‖u_0 + t·step − u_1‖² = 2 step·(u_0 − u_1)


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_every_loss_is_a_finite_scalar_and_refuses_mismatched_labels(method: str) -> None:
    loss_fn = make_loss(method)
    u = torch.randn(6, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = loss_fn(u, labels, torch.randn(6, 3))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and torch.isfinite(u.grad).all()
    with pytest.raises(ValueError, match="labels"):
        loss_fn(u, labels[:4], torch.randn(6, 3))


def test_quantisation_parts_by_hand() -> None:
    assert sign_gap(U).item() == pytest.approx(QUANT)
    assert unit_l1_gap(U).item() == pytest.approx((2 + 0 + 1) / 3)


def test_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="dhcnn"):
        make_loss("nope")


def test_trains_classifier_says_whether_the_logits_are_trained() -> None:
    assert make_loss("dhcnn").trains_classifier and not make_loss("dhcnn", eta=0.0).trains_classifier
    assert not make_loss("dsh").trains_classifier and not make_loss("dpsh").trains_classifier
    assert make_loss("aurora").trains_classifier and not make_loss("aurora", class_weight=0.0).trains_classifier

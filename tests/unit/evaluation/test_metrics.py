"""Retrieval metrics on hand-worked rankings, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from orbithash.evaluation.metrics import accuracy, average_precision, hamming_distances, mean_average_precision

# One-byte codes. Query 0b00000000 (label 1) is at distance 0, 2, 1, 1 from the database items.
DB_CODES = np.array([[0b00000000], [0b00000011], [0b00000001], [0b10000000]], np.uint8)
DB_LABELS = np.array([1, 1, 0, 1])
QUERY = np.array([[0b00000000]], np.uint8)


def test_average_precision_by_hand() -> None:
    assert average_precision(np.array([0, 1, 0, 1])) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert average_precision(np.array([1, 1, 0, 0])) == 1.0
    assert average_precision(np.array([0, 0, 0])) == 0.0
    assert average_precision(np.array([], np.uint8)) == 0.0


def test_ties_are_broken_by_database_order() -> None:
    # Stable ranking: item 0 (d 0), items 2 and 3 (d 1, in database order), item 1 (d 2):
    # relevance 1, 0, 1, 1 → AP = (1/1 + 2/3 + 3/4) / 3. Item 3 first among the ties would
    # give 1, 1, 0, 1 → 0.917.
    got = mean_average_precision(QUERY, np.array([1]), DB_CODES, DB_LABELS, bits=8)
    assert got == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_topk_divides_by_relevant_items_retrieved() -> None:
    at2 = mean_average_precision(QUERY, np.array([1]), DB_CODES, DB_LABELS, bits=8, topk=2)
    at3 = mean_average_precision(QUERY, np.array([1]), DB_CODES, DB_LABELS, bits=8, topk=3)
    assert at2 == pytest.approx(1.0)  # ranked relevance 1, 0
    assert at3 == pytest.approx((1 + 2 / 3) / 2)  # 1, 0, 1


def test_map_averages_queries_and_scores_a_query_without_relevant_items_zero() -> None:
    queries = np.array([[0b00000000], [0b00000011]], np.uint8)
    got = mean_average_precision(queries, np.array([1, 7]), DB_CODES, DB_LABELS, bits=8)
    assert got == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + 0.0) / 2)


def test_hamming_distances_match_unpacked_bits() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (11, 3), dtype=np.uint8)
    ua, ub = np.unpackbits(a, axis=1), np.unpackbits(b, axis=1)
    expected = (ua[:, None, :] != ub[None, :, :]).sum(axis=2)
    assert (hamming_distances(a, b) == expected).all()


def test_codes_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bits"):
        mean_average_precision(QUERY, np.array([1]), DB_CODES, DB_LABELS, bits=16)


def test_accuracy_takes_labels_or_scores() -> None:
    labels = np.array([0, 2, 1, 1])
    assert accuracy(np.array([0, 2, 0, 1]), labels) == 0.75
    scores = np.array([[5, 0, 0], [0, 1, 3], [2, 0, 1], [1, 0, 0]])  # argmax 0, 2, 0, 0
    assert accuracy(scores, labels) == 0.5
    with pytest.raises(ValueError, match=r"predictions \(2,\) and labels \(4,\) must match"):
        accuracy(np.array([0, 1]), labels)


def test_long_runs_of_ties_keep_database_order() -> None:
    # 64 codes at distance 0, 1 or 2 from the query: an unstable sort reorders the long tie runs.
    rng = np.random.default_rng(1)
    db_codes = rng.integers(0, 4, (64, 1)).astype(np.uint8)
    db_labels = rng.integers(0, 2, 64)
    distance = [bin(int(c)).count("1") for c in db_codes[:, 0]]
    order = sorted(range(64), key=lambda i: (distance[i], i))
    got = mean_average_precision(QUERY, np.array([1]), db_codes, db_labels, bits=8)
    assert got == pytest.approx(average_precision(db_labels[order] == 1))


# --- the vectorised per-query metrics of the evaluation report --------------------------------


def test_tie_aware_ap_is_the_mean_ap_over_every_order_of_the_ties() -> None:
    from itertools import permutations

    from orbithash.evaluation.metrics import radius_counts, relevance, tie_aware_average_precisions

    dist = hamming_distances(QUERY, DB_CODES)  # 0, 2, 1, 1: items 2 and 3 tie
    rel = relevance(np.array([1]), DB_LABELS)
    n, r = radius_counts(dist, rel, 8)
    got = tie_aware_average_precisions(n, r)[0]
    # Orders of the tie (2, 3) and (3, 2): relevance 1,0,1,1 and 1,1,0,1.
    assert got == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + (1 + 1 + 3 / 4) / 3) / 2)

    # A longer brute-force check: 7 items in three tie groups, every one of the 7! orders.
    d = np.array([[1, 0, 1, 2, 1, 0, 2]])
    rel7 = np.array([[1, 0, 1, 1, 0, 1, 0]], bool)
    brute = []
    for perm in permutations(range(7)):
        order = sorted(perm, key=lambda i: d[0, i])  # ties in the permutation's order
        brute.append(average_precision(rel7[0, order]))
    n7, r7 = radius_counts(d, rel7, 2)
    assert tie_aware_average_precisions(n7, r7)[0] == pytest.approx(np.mean(brute))


def test_vectorised_ap_and_precision_match_the_reference() -> None:
    from orbithash.evaluation.metrics import average_precisions, precision_at, relevance, stable_ranking

    rng = np.random.default_rng(2)
    q = rng.integers(0, 256, (5, 2), dtype=np.uint8)
    d = rng.integers(0, 256, (40, 2), dtype=np.uint8)
    ql, dl = rng.integers(0, 3, 5), rng.integers(0, 3, 40)
    ranked = stable_ranking(hamming_distances(q, d), relevance(ql, dl))
    assert average_precisions(ranked).mean() == pytest.approx(mean_average_precision(q, ql, d, dl, bits=16))
    assert average_precisions(ranked[:, :7]).mean() == pytest.approx(
        mean_average_precision(q, ql, d, dl, bits=16, topk=7))
    assert precision_at(ranked, 4).tolist() == [row[:4].mean() for row in ranked]

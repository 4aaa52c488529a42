"""``app.analysis`` against numbers worked out by hand on small explicit matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headmap.attention import stats as analysis

# One layer-0 head worked through by hand below (rows sum to 1).
W = [
    [0.5, 0.25, 0.25],
    [0.1, 0.6, 0.3],
    [0.0, 0.7, 0.3],
]
U = [[1 / 3] * 3] * 3  # uniform
I3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # each token attends to itself
P = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # previous-token head (row 0 has no previous)

ATTN = torch.tensor([[W, U], [I3, P]])  # (L=2, H=2, T=3, T=3)
CLS, SEP = [0], [2]  # tokens: [CLS] x [SEP]


@pytest.fixture(scope="module")
def stats() -> analysis.HeadStats:
    return analysis.head_stats(ATTN, CLS, SEP)


def close(actual: torch.Tensor | None, expected: list[list[float]]) -> None:
    assert actual is not None
    assert actual.shape == (2, 2)
    np.testing.assert_allclose(actual.numpy(), np.array(expected), atol=1e-6)


def test_entropy(stats: analysis.HeadStats) -> None:
    ln = math.log
    row0 = -(0.5 * ln(0.5) + 0.25 * ln(0.25) + 0.25 * ln(0.25))  # 1.0397
    row1 = -(0.1 * ln(0.1) + 0.6 * ln(0.6) + 0.3 * ln(0.3))  # 0.8979
    row2 = -(0.7 * ln(0.7) + 0.3 * ln(0.3))  # 0 ln 0 = 0; 0.6109
    w_entropy = (row0 + row1 + row2) / 3
    close(stats.entropy, [[w_entropy, ln(3)], [0.0, 0.0]])


def test_distance(stats: analysis.HeadStats) -> None:
    # sum_k w[q,k] |q-k| per row: W: 0.25*1 + 0.25*2 = 0.75; 0.1*1 + 0.3*1 = 0.4; 0.7*1 = 0.7
    w_dist = (0.75 + 0.4 + 0.7) / 3
    u_dist = ((0 + 1 + 2) / 3 + (1 + 0 + 1) / 3 + (2 + 1 + 0) / 3) / 3  # 8/9
    p_dist = (0 + 1 + 1) / 3
    close(stats.distance, [[w_dist, u_dist], [0.0, p_dist]])


def test_max_weight_and_row_max(stats: analysis.HeadStats) -> None:
    close(stats.max_weight, [[0.7, 1 / 3], [1.0, 1.0]])
    close(stats.row_max, [[(0.5 + 0.6 + 0.7) / 3, 1 / 3], [1.0, 1.0]])


def test_cls_and_sep_shares(stats: analysis.HeadStats) -> None:
    close(stats.to_cls, [[(0.5 + 0.1 + 0.0) / 3, 1 / 3], [1 / 3, (1 + 1 + 0) / 3]])
    close(stats.to_sep, [[(0.25 + 0.3 + 0.3) / 3, 1 / 3], [1 / 3, 0.0]])


def test_several_sep_positions_add_up() -> None:
    st = analysis.head_stats(ATTN, cls=[0], sep=[1, 2])
    assert st.to_sep is not None
    assert st.to_sep[0, 0].item() == pytest.approx(((0.25 + 0.25) + (0.6 + 0.3) + (0.7 + 0.3)) / 3)


def test_self_previous_next(stats: analysis.HeadStats) -> None:
    close(stats.to_self, [[(0.5 + 0.6 + 0.3) / 3, 1 / 3], [1.0, 1 / 3]])
    # previous: w[1,0], w[2,1] over the 2 rows that have one; next: w[0,1], w[1,2].
    close(stats.to_previous, [[(0.1 + 0.7) / 2, 1 / 3], [0.0, 1.0]])
    close(stats.to_next, [[(0.25 + 0.3) / 2, 1 / 3], [0.0, 0.0]])


def test_to_first_is_column_zero(stats: analysis.HeadStats) -> None:
    # w[q, 0] over the 3 rows, read off ATTN by hand (the attention sink of decoders).
    close(stats.to_first, [[(0.5 + 0.1 + 0.0) / 3, 1 / 3], [1 / 3, (1 + 1 + 0) / 3]])


def test_no_cls_no_sep_gives_none() -> None:
    st = analysis.head_stats(ATTN)  # e.g. GPT-2: no special tokens at all
    assert st.to_cls is None and st.to_sep is None
    close(st.to_self, [[(0.5 + 0.6 + 0.3) / 3, 1 / 3], [1.0, 1 / 3]])  # the rest as with special tokens


def test_single_token_has_no_neighbours() -> None:
    st = analysis.head_stats(torch.ones(1, 1, 1, 1))
    assert st.to_previous is None and st.to_next is None
    assert st.entropy.item() == 0.0 and st.to_self.item() == 1.0 and st.distance.item() == 0.0


def test_special_positions_need_flag_and_string() -> None:
    tokens = ["[CLS]", "[CLS]", "a", "[SEP]", "b", "[SEP]"]
    special = [True, False, False, True, False, True]  # the second "[CLS]" is text the user typed
    assert analysis.special_positions(tokens, special, "[CLS]") == [0]
    assert analysis.special_positions(tokens, special, "[SEP]") == [3, 5]
    assert analysis.special_positions(tokens, special, None) == []
    with pytest.raises(ValueError, match="special flags"):
        analysis.special_positions(tokens, special[:-1], "[SEP]")


def test_mean_and_max_over_heads() -> None:
    mean = analysis.mean_over_heads(ATTN)  # (2, 3, 3)
    maxi = analysis.max_over_heads(ATTN)
    third = 1 / 3
    expected_mean0 = [
        [(0.5 + third) / 2, (0.25 + third) / 2, (0.25 + third) / 2],
        [(0.1 + third) / 2, (0.6 + third) / 2, (0.3 + third) / 2],
        [(0.0 + third) / 2, (0.7 + third) / 2, (0.3 + third) / 2],
    ]
    expected_max1 = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]  # max(I3, P)
    np.testing.assert_allclose(mean[0].numpy(), expected_mean0, atol=1e-6)
    np.testing.assert_allclose(maxi[1].numpy(), expected_max1, atol=1e-6)
    assert mean.shape == maxi.shape == (2, 3, 3)


def test_rollout_by_hand() -> None:
    attn = torch.tensor(
        [
            [[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]],  # layer 0: mean [[.5,.5],[.5,.5]]
            [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]],  # layer 1: mean [[1,0],[.5,.5]]
        ]
    )  # (2, 2, 2, 2)
    # Â_0 = 0.5*mean + 0.5*I = [[.75,.25],[.25,.75]]; Â_1 = [[1,0],[.25,.75]]
    # rollout_1 = Â_1 @ Â_0 = [[.75, .25], [.25*.75 + .75*.25, .25*.25 + .75*.75]]
    out = analysis.rollout(attn)
    np.testing.assert_allclose(out[0].numpy(), [[0.75, 0.25], [0.25, 0.75]], atol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), [[0.75, 0.25], [0.375, 0.625]], atol=1e-6)


def test_rollout_is_the_explicit_product() -> None:
    gen = torch.Generator().manual_seed(0)
    attn = torch.rand(4, 3, 5, 5, generator=gen).softmax(-1)  # (L, H, T, T)
    a = attn.double().numpy()
    hats = []
    for layer in range(4):
        m = 0.5 * a[layer].mean(axis=0) + 0.5 * np.eye(5)
        hats.append(m / m.sum(axis=1, keepdims=True))
    out = analysis.rollout(attn)
    assert out.shape == (4, 5, 5)
    np.testing.assert_allclose(out[3].numpy(), hats[3] @ hats[2] @ hats[1] @ hats[0], atol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), hats[1] @ hats[0], atol=1e-6)
    np.testing.assert_allclose(out.sum(-1).numpy(), 1.0, atol=1e-6)


def test_rollout_renormalises_rows() -> None:
    attn = torch.tensor([[[[0.4, 0.4], [0.0, 0.8]]]])  # rows sum to 0.8, as after rounding or masking
    # Â = [[0.7, 0.2], [0, 0.9]] -> rows / sums: [[7/9, 2/9], [0, 1]]
    np.testing.assert_allclose(analysis.rollout(attn)[0].numpy(), [[7 / 9, 2 / 9], [0.0, 1.0]], atol=1e-6)


def test_difference() -> None:
    a, b = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    np.testing.assert_allclose(analysis.difference(a, b).numpy(), [[0.25, -0.25]])
    with pytest.raises(ValueError, match="cannot subtract"):
        analysis.difference(a, torch.zeros(1, 3))


@pytest.mark.parametrize("shape", [(3, 3), (1, 2, 3, 4), (1, 1, 1, 3, 3)])
def test_wrong_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(L, H, T, T\)"):
        analysis.head_stats(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"\(L, H, T, T\)"):
        analysis.rollout(torch.zeros(shape))

"""Official library formulas: docs/scoring.md §7.1 single-op vectors, §3.3 output sizes, §7.7 score checks."""

from fractions import Fraction

import pytest

from micronet_lib.scoring import OPS_NORMALIZER, PARAMS_NORMALIZER, ops, score

SCORE_ABS = 1e-9  # docs/scoring.md §7.8: scores from given S_p, S_o
PUBLISHED_DIGITS_ABS = 5e-7  # §7.7 "computed" column is printed to 6 decimals


@pytest.mark.parametrize(
    "op, bits, mults, adds",
    [
        # #1, #2: Conv2D(32, 3x3, 3->16, same, bias, relu)
        (lambda: ops.conv2d(32, 3, 3, 16, activation="relu", sparsity=0, param_bits=32), 14_336, 458_752, 442_368),
        (lambda: ops.conv2d(32, 3, 3, 16, activation="relu", sparsity=0.5, param_bits=16), 4_144, 237_568, 221_184),
        # #3, #4: DepthWiseConv2D(16, 3x3, 96, stride 2, swish)
        (lambda: ops.depthwise_conv2d(16, 3, 96, stride=2, activation="swish", param_bits=16), 15_360, 73_728, 61_440),
        (lambda: ops.depthwise_conv2d(16, 3, 96, stride=2, activation="swish", sparsity=0.25, param_bits=16),
         12_768, 59_904, 47_616),
        (lambda: ops.global_avg(8, 640), 0, 640, 40_320),  # #5
        (lambda: ops.scale(8, 64), 0, 4_096, 0),  # #6a
        (lambda: ops.add(8, 64), 0, 0, 4_096),  # #6b
        (lambda: ops.fully_connected(640, 100, param_bits=32), 2_051_200, 64_000, 64_000),  # #7
        (lambda: ops.fully_connected(640, 100, sparsity=0.9, param_bits=16), 168_000, 6_400, 6_400),  # #8
        (lambda: ops.fully_connected(16, 4, activation="sigmoid", param_bits=16), 1_088, 72, 68),  # #9
    ],
)
def test_single_op_vectors(op, bits, mults, adds):
    c = op()
    assert (c.param_bits, c.mults, c.adds) == (bits, mults, adds)


def test_sparse_conv_bit_breakdown():
    # #2: 3,456 values + 432 mask + 256 bias bits
    dense_values = ops.conv2d(32, 3, 3, 16, sparsity=0.5, param_bits=16, use_bias=False).param_bits
    assert dense_values == 3_456 + 432
    assert ops.fully_connected(640, 100, param_bits=32).params == 64_100


@pytest.mark.parametrize(
    "size, k, padding, stride, out",
    [(32, 3, "same", 2, 16), (7, 3, "same", 2, 4), (32, 1, "valid", 2, 16), (63, 3, "same", 2, 32), (224, 5, "same", 2, 112)],
)
def test_output_sizes(size, k, padding, stride, out):
    assert ops.output_size(size, k, stride, padding) == out


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="sparsity"):
        ops.conv2d(32, 3, 3, 16, sparsity=1.0)
    with pytest.raises(ValueError, match="param_bits"):
        ops.fully_connected(4, 4, param_bits=64)
    with pytest.raises(ValueError, match="padding"):
        ops.output_size(32, 3, 1, "full")
    with pytest.raises(ValueError, match="hswish"):  # the library defines no hswish: error lists the known ones
        ops.activation_cost("elu")


def test_activation_costs():
    assert ops.activation_cost("hardswish") == (4, 1)  # docs/scoring.md §4, the KAIST convention
    assert ops.activation_cost("silu") == (3, 1)
    assert ops.activation_cost("relu6") == (2, 0)
    assert ops.activation_cost(None) == (0, 0)


def test_exact_fractions():
    assert ops.as_fraction(0.1) == Fraction(1, 10)
    c = ops.fully_connected(106, 100, sparsity=Fraction(599, 10600), param_bits=16)
    assert c.mults == 10_001 and c.adds == 10_001  # v1_pr_60 classifier: 10,001 nonzeros of 10,600 (docs/scoring.md §5.4)


@pytest.mark.parametrize(
    "sp, so, expected",
    [
        (1.01e6, 1.213e9, 0.143305),  # ProxylessNAS-TTQ
        (0.09853e6, 85.27e6, 0.010828),  # MSUNet-V3
        (0.32467e6, 384.8e6, 0.045578),  # WaveComp #3
        (0.30487e6, 0.5610e9, 0.061832),  # Sloth
        (0.43e6, 129.83e6, 0.024157),  # HHI-MAL
    ],
)
def test_score_formula_published_entries(sp, so, expected):
    assert score(sp, so) == pytest.approx(expected, abs=PUBLISHED_DIGITS_ABS)


def test_kaist_score_split():
    assert 108_108.75 / PARAMS_NORMALIZER == pytest.approx(0.0029619, abs=5e-8)
    assert 26_052_109 / OPS_NORMALIZER == pytest.approx(0.0024835, abs=5e-8)
    # The authors' printed score string, from their printed inputs (docs/scoring.md §7.3).
    assert score(108_108.75, 26_052_109) == pytest.approx(0.0054454020554474585, abs=SCORE_ABS)
    assert score(90_091, 25_523_716) == pytest.approx(0.004901393953798138, abs=SCORE_ABS)
    assert score(94_237, 26_041_594) == pytest.approx(0.005064351727019863, abs=SCORE_ABS)
    assert score(1, 1, normalizers=(2.0, 4.0)) == pytest.approx(0.75, abs=SCORE_ABS)

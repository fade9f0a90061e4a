"""Scoring options on small models built here, checked against hand counts from the rules' formulas.

docs/scoring.md §2.2 (a b-bit value counts b/32), §2.3 (an op costs max(input widths)/32; adds at the
accumulator width), §3.3 (per-op formulas), §4 (early exit: expected ops over the test set).
"""

from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.scoring import DataDependentError, UnsupportedOpError, count, measure_exit_rates, register_module


class ChannelScale(nn.Module):
    """Folded BN as its own layer: y = x · weight[c] + bias[c] (the quantised entries' pattern)."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))
        self.bias = nn.Parameter(torch.linspace(-0.1, 0.1, channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class RoundQuant(nn.Module):
    """Fake quantiser: rounds to a b-bit grid on [-1, 1) (a format conversion, free by docs/scoring.md §2.3)."""

    def __init__(self, bits):
        super().__init__()
        self.step = 2.0 ** (1 - bits)

    def forward(self, x):
        return torch.round(x.clamp(-1, 1 - self.step) / self.step) * self.step


class QuantNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.q0 = RoundQuant(8)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.s1 = ChannelScale(8)
        self.relu = nn.ReLU()
        self.q1 = RoundQuant(4)
        self.conv2 = nn.Conv2d(8, 16, 1, bias=False)
        self.s2 = ChannelScale(16)
        self.q2 = RoundQuant(8)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = self.q1(self.relu(self.s1(self.conv1(self.q0(x)))))
        h = self.s2(self.conv2(h))
        return self.fc(self.q2(F.adaptive_avg_pool2d(h, 1).flatten(1)))


register_module(ChannelScale, mults=1, adds=1)  # stores weight and bias; 1 mult + 1 add per element
register_module(RoundQuant, params=())  # free conversion, but a visible row

PARAM_BITS = {"conv1": 4, "conv2": 6, "s*": 16, "fc": 8}
ACT_BITS = {"conv1": 8, "conv2": 4, "s*": 16, "fc": 8}
ACC_BITS = {"conv*": 16}


def _hand_count():
    """docs/scoring.md §3.3 formulas, input 1×3×8×8, official convention, bias only where a layer has one."""
    n1, n2 = 8 * 8 * 8, 16 * 8 * 8
    params_s = (Fraction(27 * 8 * 4, 32) + Fraction(16 * 16, 32)  # conv1 at 4 bits; s1 weight+bias at 16
                + Fraction(8 * 16 * 6, 32) + Fraction(32 * 16, 32)  # conv2 at 6 bits; s2 at 16
                + Fraction((160 + 10) * 8, 32))  # fc weight + bias at 8 bits
    ops_s = (27 * n1 * Fraction(max(4, 8), 32) + 26 * n1 * Fraction(16, 32)  # conv1: K mults, K-1 adds (no bias)
             + n1 * Fraction(16, 32) + n1  # s1: mult at max(16, 16); add at 32
             + n1  # relu: 1 mult at 32 bits (its input is not declared)
             + 8 * n2 * Fraction(max(6, 4), 32) + 7 * n2 * Fraction(16, 32)  # conv2
             + n2 * Fraction(16, 32) + n2  # s2
             + 16 + 63 * 16  # global pool: C divides + (H²-1)·C adds, 32-bit
             + 160 * Fraction(8, 32) + 160)  # fc: vl·C_out mults at 8 bits, vl·C_out adds (bias add included)
    return params_s, ops_s


def test_quantised_net_matches_hand_count():
    net = QuantNet()
    r = count(net, (1, 3, 8, 8), convention="official", bias="present", param_bits=PARAM_BITS, act_bits=ACT_BITS,
              accumulator_bits=ACC_BITS)
    params_s, ops_s = _hand_count()
    assert r.exact["params_s"] == params_s and r.exact["ops_s"] == ops_s
    assert not r.summary["freebie"] and "below 16 bits (4, 6, 8)" in r.summary["freebie_forfeited"]
    t = r.table.set_index("path")
    assert tuple(t.loc["conv1", ["param_bits", "act_bits", "mult_bits", "add_bits"]]) == (4, 8, 8, 16)
    assert tuple(t.loc["conv2", ["param_bits", "act_bits", "mult_bits", "add_bits"]]) == (6, 4, 6, 16)
    assert (t.loc["s1", "kind"], t.loc["s1", "params"]) == ("module", 16)
    assert t.loc[["q0", "q1", "q2"], ["mults", "adds"]].to_numpy().sum() == 0  # visible, declared free


def test_widths_from_model_attributes_equal_the_dict_form():
    net = QuantNet()
    for name, bits in PARAM_BITS.items():
        for m in ((net.s1, net.s2) if name == "s*" else (getattr(net, name),)):
            m.param_bits = bits
    for name, bits in ACT_BITS.items():
        for m in ((net.s1, net.s2) if name == "s*" else (getattr(net, name),)):
            m.act_bits = bits
    net.conv1.accumulator_bits = net.conv2.accumulator_bits = 16
    r = count(net, (1, 3, 8, 8), convention="official", bias="present", param_bits="model", act_bits="model",
              accumulator_bits="model")
    assert (r.exact["params_s"], r.exact["ops_s"]) == _hand_count()


def test_bias_policies():
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False),
                        nn.Conv2d(4, 2, 1, bias=True))
    n = 4 * 4
    folded = count(net, (1, 3, 4, 4), convention="official", freebie=False).exact
    present = count(net, (1, 3, 4, 4), convention="official", freebie=False, bias="present").exact
    own = count(net, (1, 3, 4, 4), convention="official", freebie=False, bias="own").exact
    assert folded["params"] - present["params"] == 4  # the middle conv: no bias, no BN after it
    assert folded["adds"] - present["adds"] == 4 * n
    # 'own': the first conv loses its folded bias, BN is charged unfused: 2·C values, 1 mult + 1 add per element
    assert present["params"] - own["params"] == 4 - 8
    assert (own["mults"] - present["mults"], own["adds"] - present["adds"]) == (4 * n, 4 * n - 4 * n)
    with pytest.raises(ValueError, match="allowed: folded, present, own"):
        count(net, (1, 3, 4, 4), bias="sometimes")


def test_accumulator_below_32_needs_freebie_off():
    with pytest.raises(ValueError, match="accumulator_bits < 32 with the 16-bit freebie"):
        count(QuantNet(), (1, 3, 8, 8), accumulator_bits=16)
    with pytest.raises(ValueError, match="'model' reads|must be an int"):
        count(QuantNet(), (1, 3, 8, 8), param_bits="attributes")


def test_without_registration_the_scale_parameters_are_not_silent():
    class Scale2(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.gain.view(1, -1, 1, 1)

    # A view of a parameter used as an operand is that parameter (issue #31): the product is charged
    # (1 mult per element, 4·4·4) and the gain is stored dense (4 values), without any registration.
    r = count(nn.Sequential(nn.Conv2d(3, 4, 1), Scale2()), (1, 3, 4, 4), convention="official", freebie=False)
    row = r.table[r.table.kind == "tensor_mul"].iloc[0]
    assert (row.mults, row.adds, row.params) == (64, 0, 4)
    assert r.summary["params"] == 3 * 4 + 4 + 4


# ---------------------------------------------------------------------------------------- early exit

class EarlyExit(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.exit1 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        self.trunk = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        self.count_all_exits = False  # the counting pass runs every branch
        self.decision = "bool"

    def exit_index(self, x):
        """0 where the exit branch is confident, 1 where the example goes on (the model's own rule)."""
        return (self.exit1(self.stem(x)).amax(1) <= 0.1).long()

    def forward(self, x):
        h = self.stem(x)
        y1 = self.exit1(h)
        if self.count_all_exits:
            return y1, self.head(self.trunk(h))
        if self.decision == "bool" and y1[:, 0].gt(0):  # an `if` on a tensor
            return y1
        if self.decision == "long":
            keep = (y1.amax(1) > 0.1).long()
            return y1 * keep
        if self.decision == "sum" and (y1.amax(1) > 0.1).sum() == x.shape[0]:
            return y1
        return self.head(self.trunk(h))


@pytest.mark.parametrize("convention", ["official", "kaist"])
def test_early_exit_expected_ops(convention):
    net = EarlyExit()
    net.count_all_exits = True
    rate = Fraction(3, 10)
    r = count(net, (1, 3, 8, 8), convention=convention, freebie=False, exit_rates={"exit1": 0.3}).exact
    first = count(nn.Sequential(net.stem, net.exit1), (1, 3, 8, 8), convention=convention, freebie=False).exact
    rest = count(nn.Sequential(net.trunk, net.head), (1, 8, 8, 8), convention=convention, freebie=False).exact
    assert r["params"] == first["params"] + rest["params"]  # every branch is stored
    for key in ("mults", "adds", "ops_s"):
        assert r[key] == first[key] + (1 - rate) * rest[key], key
    with pytest.raises(ValueError, match="no counted op lies in module 'exit9'"):
        count(net, (1, 3, 8, 8), exit_rates={"exit9": 0.1})
    with pytest.raises(ValueError, match="runs last"):
        count(net, (1, 3, 8, 8), exit_rates={"head": 0.1})


def test_exit_rates_measured_on_a_batch():
    torch.manual_seed(0)
    net = EarlyExit().eval()
    images = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        idx = net.exit_index(images)
    rates = measure_exit_rates(idx, ["exit1"])
    assert rates["exit1"] == pytest.approx(float((idx == 0).float().mean()))
    net.count_all_exits = True
    r = count(net, (1, 3, 8, 8), exit_rates=rates)
    assert r.summary["exit_rates"] == rates


@pytest.mark.parametrize("decision, message", [
    ("bool", r"an `if` on a tensor \(Tensor.__bool__\) in module '<root>' \(EarlyExit\)"),
    ("long", r"Tensor.long\(\)"),
    ("sum", r"'sum'.*does not act on the batch.*exit_rates="),
])
def test_data_dependent_control_flow_says_what_to_declare(decision, message):
    net = EarlyExit()
    net.decision = decision
    with pytest.raises(UnsupportedOpError, match=message) as info:
        count(net, (1, 3, 8, 8))
    assert "exit_rates=" in str(info.value)
    if decision != "sum":
        assert isinstance(info.value, DataDependentError)


@pytest.mark.parametrize("convention", ["kaist", "official"])
def test_bias_present_reproduces_the_kaist_vectors(asset, convention):
    """Every MicroNet conv is followed by a BN (or has its own bias: SE convs, FC), so 'present' = 'folded'."""
    from micronet_lib.models.checkpoints import load_checkpoint

    net = load_checkpoint(asset("micronet_v1_pr_60.t7"))
    folded = count(net, convention=convention).exact
    present = count(net, convention=convention, bias="present").exact
    assert folded == present
    assert round(float(present["score"]), 7) == {"kaist": 0.0054454, "official": 0.0054597}[convention]


def test_register_module_with_a_cost_function():
    class Pairwise(nn.Module):
        """A layer whose cost is not per element: C² mults and C·(C−1) adds per pixel (a channel mixer)."""

        def __init__(self, c):
            super().__init__()
            self.mix = nn.Parameter(torch.eye(c))
            self.unused_buffer_like = nn.Parameter(torch.zeros(1))  # not declared: not stored

        def forward(self, x):
            return torch.einsum("bchw,cd->bdhw", x, self.mix)

    seen = []

    def cost(module, in_shapes, out_shape):
        seen.append((in_shapes, out_shape))
        c, h, w = out_shape
        return c * c * h * w, c * (c - 1) * h * w

    register_module(Pairwise, params=("mix",), cost=cost)
    r = count(nn.Sequential(nn.Conv2d(3, 4, 1), Pairwise(4)), (2, 3, 5, 5), convention="official", freebie=False)
    row = r.table.set_index("path").loc["1"]
    assert seen == [([(4, 5, 5)], (4, 5, 5))]  # per-example shapes: no batch dimension
    assert (row.kind, row.params, row.mults, row.adds) == ("module", 16, 16 * 25, 12 * 25)
    with pytest.raises(ValueError, match="must be a sequence of parameter names"):
        register_module(Pairwise, params="mix")


def test_integer_cast_of_a_constant_is_not_data_dependent():
    class Offsets(nn.Module):
        def forward(self, x):
            idx = torch.arange(x.shape[1]).long()  # a constant: no per-example data involved
            return x[:, idx]

    count(nn.Sequential(nn.Conv2d(3, 4, 1), Offsets()), (1, 3, 4, 4))

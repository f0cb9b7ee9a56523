"""Quantization-aware fine-tuning: the rounding it simulates, that eval mode is the float network,
that checkpoints stay plain, and that the trainer runs with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_train import _tiny
from training.data import make_synthetic_dataset
from training.models.student import create_student
from training.qat import (
    FakeQuantConv2d,
    RangeObserver,
    conv_call_order,
    fake_quant_activation,
    fake_quant_weight,
    prepare_qat,
)
from training.train import load_checkpoint, train


def test_weights_round_per_output_channel_to_int8_levels() -> None:
    torch.manual_seed(0)
    w = (
        torch.randn(6, 4, 3, 3)
        * torch.tensor([1e-3, 0.1, 1.0, 5.0, 20.0, 0.5])[:, None, None, None]
    )
    w.requires_grad_(True)
    q = fake_quant_weight(w)
    for c in range(6):
        scale = w[c].abs().max().item() / 127
        levels = q[c].detach() / scale
        assert torch.allclose(levels, levels.round(), atol=1e-3), f"channel {c} off the grid"
        assert levels.abs().max().item() == pytest.approx(127, abs=1e-3)
        assert (q[c] - w[c]).abs().max().item() <= scale / 2 + 1e-6
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w)), "straight-through gradient"


def test_activations_round_to_256_levels_holding_zero() -> None:
    x = torch.linspace(0.3, 2.0, 1000, requires_grad=True)
    q = fake_quant_activation(x, 0.3, 2.0)  # range widened to [0, 2]: zero must be a level
    assert len(torch.unique(q.detach())) <= 256
    assert (q - x).abs().max().item() <= 2.0 / 255 / 2 + 1e-6
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    outside = torch.tensor([-1.0, 3.0], requires_grad=True)
    clipped = fake_quant_activation(outside, 0.0, 2.0)
    assert clipped.tolist() == pytest.approx([0.0, 2.0])
    clipped.sum().backward()
    assert outside.grad.tolist() == [0.0, 0.0], "no gradient through the clip"


def test_observer_follows_the_range_and_keeps_no_state() -> None:
    obs = RangeObserver(momentum=0.5)
    obs(torch.tensor([-1.0, 1.0]))
    assert obs.range.tolist() == [-1.0, 1.0], "the first batch sets the range"
    obs(torch.tensor([-3.0, 3.0]))
    assert obs.range.tolist() == [-2.0, 2.0]
    obs.eval()
    x = torch.tensor([0.123456, 7.0])
    assert torch.equal(obs(x), x), "eval mode passes through untouched"
    assert obs.state_dict() == {}
    with pytest.raises(ValueError, match="momentum"):
        RangeObserver(momentum=0.0)


def test_fake_quant_conv_is_the_float_conv_in_eval_and_rounds_in_training() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=2)
    q = FakeQuantConv2d.from_float(conv)
    assert q.weight is conv.weight and q.bias is conv.bias, "shares the parameters"
    x = torch.randn(2, 8, 13, 11)
    q.eval()
    assert torch.equal(q(x), conv(x))
    q.train()
    y = q(x)
    ref = conv(x)
    assert not torch.equal(y, ref)
    step = (ref.max() - ref.min()).item() / 255
    assert (y - ref).abs().max().item() < 4 * step, "rounding noise, not a different function"
    assert len(torch.unique(y.detach())) <= 256, "the output is uint8-rounded"
    with pytest.raises(TypeError, match="plain nn.Conv2d"):
        FakeQuantConv2d.from_float(q)
    with pytest.raises(ValueError, match="padding_mode"):
        FakeQuantConv2d.from_float(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"))


@pytest.mark.parametrize("variant", ["tiny", "fast"])
def test_prepare_swaps_all_but_the_first_and_last_conv_and_checkpoints_stay_plain(
    variant: str,
) -> None:
    torch.manual_seed(0)
    model = create_student(variant)
    for p in model.parameters():  # away from the identity init, so outputs depend on every conv
        p.data.normal_(0, 0.05)
    order = conv_call_order(model)
    assert order[0] == "stem" and order[-1] == "head"
    plain = create_student(variant)
    plain.load_state_dict(model.state_dict())
    keys = set(model.state_dict())
    swapped = prepare_qat(model)
    assert swapped == order[1:-1]
    assert type(model.stem) is nn.Conv2d and type(model.head) is nn.Conv2d
    assert all(isinstance(model.get_submodule(n), FakeQuantConv2d) for n in swapped)
    assert set(model.state_dict()) == keys, "no new keys: a checkpoint loads into a plain model"
    x = torch.rand(1, 3, 40, 56)
    model.eval()
    assert torch.equal(model(x), plain(x))
    model.train()
    assert not torch.equal(model(x), plain(x))


def test_trainer_with_qat_writes_plain_float_checkpoints(tmp_path: Path) -> None:
    synth = make_synthetic_dataset(tmp_path / "synth", 3, frames=40, size=(160, 120))
    train(_tiny(synth, tmp_path / "qat", "--qat=true"))
    ck = load_checkpoint(tmp_path / "qat" / "last.pt")
    assert ck["config"]["qat"] is True and ck["global_step"] == 6
    plain = create_student("tiny")
    plain.load_state_dict(ck["model"])  # strict: exactly the plain student's keys
    start = create_student("tiny").state_dict()
    assert any(not torch.equal(start[k], v) for k, v in ck["model"].items()), "it trained"

"""Teachers: Restormer's size and keys, DMPHN's wiring, the registry, and the weights download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from training.models.dmphn import DMPHN
from training.models.restormer import Restormer, load_restormer
from training.teachers import (
    TEACHERS,
    WeightsError,
    fetch_weights,
    list_teachers,
    load_teacher,
)

torch.set_num_threads(2)

# Official motion_deblurring.pth: 494 tensors, 26,126,644 parameters (WithBias LayerNorm).
RESTORMER_PARAMS = 26_126_644
RESTORMER_TENSORS = 494


@pytest.fixture(scope="module")
def restormer() -> Restormer:
    torch.manual_seed(0)
    return Restormer().eval()


def test_restormer_matches_official_size(restormer: Restormer) -> None:
    assert restormer.count_params() == RESTORMER_PARAMS
    sd = restormer.state_dict()
    assert len(sd) == RESTORMER_TENSORS
    # A few keys exactly as the release names them.
    for key in (
        "patch_embed.proj.weight",
        "encoder_level1.0.norm1.body.bias",
        "encoder_level1.0.attn.temperature",
        "latent.7.ffn.dwconv.weight",
        "down3_4.body.0.weight",
        "reduce_chan_level3.weight",
        "refinement.3.attn.qkv_dwconv.weight",
        "output.weight",
    ):
        assert key in sd, key
    assert tuple(sd["latent.0.ffn.project_in.weight"].shape) == (2 * 1021, 384, 1, 1)


def test_restormer_forward_odd_size_and_features(restormer: Restormer) -> None:
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        y, feats = restormer(x, return_features=True)
    assert y.shape == x.shape
    assert [f.shape[1] for f in feats] == restormer.feature_channels
    assert feats[0].shape[-2:] == (5, 7)  # latent at 1/8 of the padded 40x56


def test_restormer_bias_free_variant_drops_norm_biases() -> None:
    sd = Restormer(LayerNorm_type="BiasFree").state_dict()
    assert not any(k.endswith("norm1.body.bias") for k in sd)


def test_restormer_state_dict_round_trip(restormer: Restormer, tmp_path: Path) -> None:
    path = tmp_path / "motion_deblurring.pth"
    torch.save({"params": restormer.state_dict()}, path)
    loaded = load_restormer(path)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not loaded.training
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x), restormer(x))


def test_restormer_load_names_missing_and_unexpected_keys(
    restormer: Restormer, tmp_path: Path
) -> None:
    sd = dict(restormer.state_dict())
    del sd["output.weight"]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)  # raw state dict, no "params" key
    with pytest.raises(
        RuntimeError, match=r"missing keys \['output.weight'\].*unexpected keys \['extra.weight'\]"
    ):
        load_restormer(path)


def test_dmphn_forward_odd_size_random_weights() -> None:
    torch.manual_seed(0)
    model = DMPHN().eval()
    assert 5_400_000 < model.count_params() < 5_450_000  # "5.4 M parameters"
    x = torch.rand(2, 3, 45, 61)
    with torch.no_grad():
        y, feats = model(x, return_features=True)
    assert y.shape == x.shape
    assert feats[0].shape == (2, 128, 12, 16)  # padded 48x64 at 1/4


def test_dmphn_levels_see_quarters_and_halves() -> None:
    """Changing one quarter of the input must change level 3's output only in that quarter."""
    torch.manual_seed(0)
    model = DMPHN().eval()
    x = torch.rand(1, 3, 32, 32)
    x2 = x.clone()
    x2[..., :16, :16] += 0.2  # top-left quarter only
    with torch.no_grad():
        f3 = model.encoder_lv3(torch.cat([x[..., :16, :16], x[..., :16, 16:]], 0))
        f3b = model.encoder_lv3(torch.cat([x2[..., :16, :16], x2[..., :16, 16:]], 0))
    assert not torch.equal(f3[0], f3b[0])
    assert torch.equal(f3[1], f3b[1])  # top-right quarter untouched: patches are independent


def test_registry_and_load_teacher_random_init() -> None:
    assert list_teachers() == ["dmphn", "restormer"]
    assert set(TEACHERS) == {"dmphn", "restormer"}
    t = load_teacher("dmphn", random_init=True)
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    with pytest.raises(KeyError, match="unknown teacher 'nope'"):
        load_teacher("nope")


def test_load_teacher_restormer_from_file_url(restormer: Restormer, tmp_path: Path) -> None:
    path = tmp_path / "src" / "motion_deblurring.pth"
    path.parent.mkdir()
    torch.save({"params": restormer.state_dict()}, path)
    t = load_teacher("restormer", weights=path.as_uri(), sha256=_sha(path))
    assert not t.training
    assert torch.equal(t.output.weight, restormer.output.weight)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_weights_local_path_and_url(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights" * 1000)
    digest = _sha(src)
    assert fetch_weights(src, sha256=digest) == src
    dest = tmp_path / "cache"
    got = fetch_weights(src.as_uri(), sha256=digest, dest_dir=dest)
    assert got == dest / "w.bin" and got.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.iterdir()] == ["w.bin"]  # no temp file left behind
    # Cached copy reused: works even once the source is gone.
    src.unlink()
    assert fetch_weights(f"file://{src}", sha256=digest, dest_dir=dest) == got


def test_fetch_weights_sha_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"abc")
    wrong = "0" * 64
    with pytest.raises(WeightsError, match=f"expected {wrong}, got {_sha(src)}"):
        fetch_weights(src, sha256=wrong)
    dest = tmp_path / "cache"
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        fetch_weights(src.as_uri(), sha256=wrong, dest_dir=dest)
    assert list(dest.iterdir()) == []  # the bad download was removed, not renamed into place
    with pytest.raises(WeightsError, match="not found"):
        fetch_weights(tmp_path / "missing.pth")


@pytest.mark.shared
def test_dmphn_loads_shared_weights(shared_dir: Path) -> None:
    weights = shared_dir / "weights" / "teachers" / "dmphn_1_2_4"
    model = load_teacher("dmphn", weights=weights)
    assert not any(p.requires_grad for p in model.parameters())
    # A flat grey image is already sharp: the trained teacher must leave it nearly unchanged.
    x = torch.full((1, 3, 64, 64), 0.5)
    with torch.no_grad():
        y = model(x)
    assert (y - x).abs().mean() < 0.02

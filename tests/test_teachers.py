"""Teachers: Restormer's size and keys, DMPHN's wiring, the registry, and the weights download."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.models.dmphn import DMPHN, load_dmphn
from training.models.restormer import Restormer, load_restormer
from training.teachers import (
    TEACHERS,
    WeightsError,
    code_fingerprint,
    fetch_weights,
    list_teachers,
    load_teacher,
    teacher_code_fingerprint,
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


def official_restormer_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the released ``motion_deblurring.pth``, by name and shape, written out
    from the paper's configuration (dim 48; blocks 4, 6, 6, 8 and 4 refinement; heads 1, 2, 4,
    8; FFN expansion 2.66; no conv bias; WithBias LayerNorm), independently of the model code."""
    shapes: dict[str, tuple[int, ...]] = {"patch_embed.proj.weight": (48, 3, 3, 3)}

    def blocks(prefix: str, n: int, dim: int, heads: int) -> None:
        hidden = int(dim * 2.66)
        for i in range(n):
            p = f"{prefix}.{i}"
            shapes.update({
                f"{p}.norm1.body.weight": (dim,), f"{p}.norm1.body.bias": (dim,),
                f"{p}.attn.temperature": (heads, 1, 1),
                f"{p}.attn.qkv.weight": (3 * dim, dim, 1, 1),
                f"{p}.attn.qkv_dwconv.weight": (3 * dim, 1, 3, 3),
                f"{p}.attn.project_out.weight": (dim, dim, 1, 1),
                f"{p}.norm2.body.weight": (dim,), f"{p}.norm2.body.bias": (dim,),
                f"{p}.ffn.project_in.weight": (2 * hidden, dim, 1, 1),
                f"{p}.ffn.dwconv.weight": (2 * hidden, 1, 3, 3),
                f"{p}.ffn.project_out.weight": (dim, hidden, 1, 1),
            })  # fmt: skip

    blocks("encoder_level1", 4, 48, 1)
    shapes["down1_2.body.0.weight"] = (24, 48, 3, 3)  # conv to dim/2, then PixelUnshuffle(2)
    blocks("encoder_level2", 6, 96, 2)
    shapes["down2_3.body.0.weight"] = (48, 96, 3, 3)
    blocks("encoder_level3", 6, 192, 4)
    shapes["down3_4.body.0.weight"] = (96, 192, 3, 3)
    blocks("latent", 8, 384, 8)
    shapes["up4_3.body.0.weight"] = (768, 384, 3, 3)  # conv to 2*dim, then PixelShuffle(2)
    shapes["reduce_chan_level3.weight"] = (192, 384, 1, 1)
    blocks("decoder_level3", 6, 192, 4)
    shapes["up3_2.body.0.weight"] = (384, 192, 3, 3)
    shapes["reduce_chan_level2.weight"] = (96, 192, 1, 1)
    blocks("decoder_level2", 6, 96, 2)
    shapes["up2_1.body.0.weight"] = (192, 96, 3, 3)
    blocks("decoder_level1", 4, 96, 1)  # level 1 is not reduced: 48 + 48 channels
    blocks("refinement", 4, 96, 1)
    shapes["output.weight"] = (3, 96, 3, 3)
    return shapes


def test_restormer_has_every_official_tensor_by_name_and_shape(restormer: Restormer) -> None:
    # The loader is strict: one renamed or reshaped tensor and a user's real weights are refused.
    expected = official_restormer_shapes()
    got = {k: tuple(v.shape) for k, v in restormer.state_dict().items()}
    assert len(expected) == RESTORMER_TENSORS
    assert sum(math.prod(s) for s in expected.values()) == RESTORMER_PARAMS
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert {k: s for k, s in got.items() if s != expected[k]} == {}


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


def _small_restormer(**kw: object) -> Restormer:
    cfg = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4])
    return Restormer(**{**cfg, **kw})


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # Fresh LayerNorm weights are ones and temperatures are ones: random values everywhere so
    # a dropped scale or a swapped operand shows.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.1)
            p.mul_(torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0))
        for name, p in model.named_parameters():
            if name.endswith("temperature"):
                p.abs_().mul_(8)
    return model.eval()


def test_restormer_block_follows_the_papers_equations() -> None:
    """One transformer block against MDTA and GDFN written from the paper with other ops:
    F.layer_norm over channels, einsum attention across channels per head, GELU gate."""
    from training.models.restormer import LayerNorm, TransformerBlock

    torch.manual_seed(0)
    dim, heads = 16, 2
    block = _randomise(TransformerBlock(dim, heads, 2.66, False, "WithBias"))
    x = torch.randn(2, dim, 6, 10)
    b, c, h, w = x.shape

    def ln(t: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
        y = F.layer_norm(t.permute(0, 2, 3, 1), (c,), norm.body.weight, norm.body.bias, 1e-5)
        return y.permute(0, 3, 1, 2)

    def mdta(t: torch.Tensor) -> torch.Tensor:
        a = block.attn
        q, k, v = (
            u.reshape(b, heads, c // heads, h * w) for u in a.qkv_dwconv(a.qkv(t)).chunk(3, 1)
        )
        q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
        logits = torch.einsum("bnix,bnjx->bnij", q, k) * a.temperature
        out = torch.einsum("bnij,bnjx->bnix", logits.softmax(-1), v)
        return a.project_out(out.reshape(b, c, h, w))

    def gdfn(t: torch.Tensor) -> torch.Tensor:
        f = block.ffn
        gate, value = f.dwconv(f.project_in(t)).chunk(2, 1)
        return f.project_out(F.gelu(gate) * value)

    with torch.no_grad():
        mid = x + mdta(ln(x, block.norm1))
        ref = mid + gdfn(ln(mid, block.norm2))
        torch.testing.assert_close(block(x), ref, rtol=1e-4, atol=1e-5)
        # The denoising releases' BiasFree norm scales by the biased std without centring.
        bias_free = _randomise(LayerNorm(dim, "BiasFree"))
        var = x.var(1, keepdim=True, unbiased=False)
        expected = x / torch.sqrt(var + 1e-5) * bias_free.body.weight.view(1, -1, 1, 1)
        torch.testing.assert_close(bias_free(x), expected, rtol=1e-4, atol=1e-5)


def test_restormer_wiring_padding_and_residual() -> None:
    model = _randomise(_small_restormer())
    m = model
    x = torch.rand(1, 3, 13, 18)  # reflect-padded by 3 rows and 6 columns to 16 x 24
    with torch.no_grad():
        xp = F.pad(x, (0, 6, 0, 3), mode="reflect")
        e1 = m.encoder_level1(m.patch_embed(xp))
        e2 = m.encoder_level2(m.down1_2(e1))
        e3 = m.encoder_level3(m.down2_3(e2))
        lat = m.latent(m.down3_4(e3))
        d3 = m.decoder_level3(m.reduce_chan_level3(torch.cat([m.up4_3(lat), e3], 1)))
        d2 = m.decoder_level2(m.reduce_chan_level2(torch.cat([m.up3_2(d3), e2], 1)))
        d1 = m.refinement(m.decoder_level1(torch.cat([m.up2_1(d2), e1], 1)))
        ref = (m.output(d1) + xp)[..., :13, :18]
        y, feats = model(x, return_features=True)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(feats[0], lat)
        torch.testing.assert_close(feats[1], d1)
        # Too small to reflect (5 rows into 3): edge replication, not a torch error.
        assert model(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3, 5)


def test_restormer_state_dict_loader_forms_and_errors(tmp_path: Path) -> None:
    from training.models.restormer import load_checkpoint, load_state_dict_strict

    source = _randomise(_small_restormer())
    sd = source.state_dict()
    # A DataParallel checkpoint under "state_dict": every key prefixed with "module.".
    target = _small_restormer()
    load_state_dict_strict(target, {"state_dict": {f"module.{k}": v for k, v in sd.items()}})
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in sd.items())
    reshaped = dict(sd)
    reshaped["output.weight"] = torch.zeros(3, 16, 1, 1)
    with pytest.raises(
        RuntimeError,
        match=r"shape mismatches \['output.weight: checkpoint \(3, 16, 1, 1\) vs model "
        r"\(3, 16, 3, 3\)'\]",
    ):
        load_state_dict_strict(_small_restormer(), {"params": reshaped}, source="w.pth")
    with pytest.raises(TypeError, match="unknown Restormer option 'colour'"):
        Restormer(colour=3)
    # A file that needs more than tensors to unpickle is refused, not run: a downloaded
    # checkpoint could name any callable.
    import datetime

    path = tmp_path / "motion_deblurring.pth"
    torch.save({"params": sd, "saved": datetime.date(2022, 1, 1)}, path)
    with pytest.raises(RuntimeError, match="not a PyTorch checkpoint of tensors"):
        load_checkpoint(path)


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


def _res(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block(x) + x


def _encoder_reference(e: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The authors' models.py Encoder.forward, written out layer by layer.
    x = e.layer1(x)
    x = _res(e.layer3, _res(e.layer2, x))
    x = e.layer5(x)
    x = _res(e.layer7, _res(e.layer6, x))
    x = e.layer9(x)
    return _res(e.layer11, _res(e.layer10, x))


def _decoder_reference(d: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = _res(d.layer14, _res(d.layer13, x))
    x = d.layer16(x)
    x = _res(d.layer18, _res(d.layer17, x))
    x = d.layer20(x)
    x = _res(d.layer22, _res(d.layer21, x))
    return d.layer24(x)


def _dmphn_reference(model: DMPHN, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' DMPHN_1_2_4 test loop, one patch at a time, on an (H, W) that divides by 8:
    level 3 on four quarters, level 2 on two halves, level 1 on the whole image."""
    enc = lambda lv, x: _encoder_reference(getattr(model, f"encoder_lv{lv}"), x)  # noqa: E731
    dec = lambda lv, x: _decoder_reference(getattr(model, f"decoder_lv{lv}"), x)  # noqa: E731
    lv1 = image - 0.5
    H, W = lv1.shape[-2:]
    lv2_1, lv2_2 = lv1[:, :, : H // 2, :], lv1[:, :, H // 2 :, :]
    lv3_1, lv3_2 = lv2_1[..., : W // 2], lv2_1[..., W // 2 :]
    lv3_3, lv3_4 = lv2_2[..., : W // 2], lv2_2[..., W // 2 :]
    f3_top = torch.cat((enc(3, lv3_1), enc(3, lv3_2)), 3)
    f3_bot = torch.cat((enc(3, lv3_3), enc(3, lv3_4)), 3)
    f3 = torch.cat((f3_top, f3_bot), 2)
    r3_top, r3_bot = dec(3, f3_top), dec(3, f3_bot)
    f2 = torch.cat((enc(2, lv2_1 + r3_top), enc(2, lv2_2 + r3_bot)), 2) + f3
    r2 = dec(2, f2)
    f1 = enc(1, lv1 + r2) + f2
    return dec(1, f1) + 0.5, f1


def test_dmphn_matches_the_authors_hierarchy() -> None:
    # Random weights cannot show a wrong wiring by their output's quality: the forward pass is
    # compared with the release's own, patch by patch, so the real weights run the same net.
    torch.manual_seed(0)
    model = DMPHN().eval()
    x = torch.rand(2, 3, 16, 32)
    with torch.no_grad():
        y, feats = model(x, return_features=True)
        ref, ref_feat = _dmphn_reference(model, x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats[0], ref_feat, rtol=1e-4, atol=1e-5)
    # Odd sizes: reflect-padded at the bottom/right to a multiple of 8, then cropped; the
    # two pads differ (3 rows, 6 columns) so swapped axes do not line up by chance.
    x = torch.rand(1, 3, 21, 26)
    with torch.no_grad():
        y = model(x)
        ref, _ = _dmphn_reference(model, torch.nn.functional.pad(x, (0, 6, 0, 3), mode="reflect"))
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref[..., :21, :26], rtol=1e-4, atol=1e-5)


def test_dmphn_tiny_frames_and_bad_channels() -> None:
    torch.manual_seed(0)
    model = DMPHN().eval()
    with torch.no_grad():
        # 3 rows cannot reflect into 5 more: edge replication instead of a torch error.
        y = model(torch.rand(1, 3, 3, 5))
    assert y.shape == (1, 3, 3, 5) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\), got \(1, 4, 16, 16\)"):
        model(torch.rand(1, 4, 16, 16))


def test_dmphn_loader_loads_frozen_and_refuses_extra_keys(tmp_path: Path) -> None:
    from training.models.dmphn import _PARTS

    torch.manual_seed(0)
    model = DMPHN().eval()
    for part in _PARTS:
        torch.save(getattr(model, part).state_dict(), tmp_path / f"{part}.pkl")
    loaded = load_dmphn(tmp_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # A tensor the network has no place for: another network's file, refused by name.
    sd = model.encoder_lv2.state_dict()
    sd["layer4.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "encoder_lv2.pkl")
    with pytest.raises(
        RuntimeError, match=r"encoder_lv2.pkl does not match .*unexpected keys \['layer4.weight'\]"
    ):
        load_dmphn(tmp_path)


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


def test_fetch_weights_digest_case_cache_refresh_and_failed_download(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"first")
    digest = _sha(src)
    assert fetch_weights(src, sha256=digest.upper()) == src  # a digest pasted in capitals
    dest = tmp_path / "cache"
    # Without a digest nothing says the cached copy is current: downloaded again each time.
    assert fetch_weights(src.as_uri(), dest_dir=dest).read_bytes() == b"first"
    src.write_bytes(b"second")
    assert fetch_weights(src.as_uri(), dest_dir=dest).read_bytes() == b"second"
    # A damaged cached copy fails its digest and is replaced by a fresh download.
    (dest / "w.bin").write_bytes(b"truncated")
    got = fetch_weights(src.as_uri(), sha256=_sha(src), dest_dir=dest)
    assert got.read_bytes() == b"second"
    # A failed download is a WeightsError naming the URL, and leaves no partial file.
    gone = (tmp_path / "gone.pth").as_uri()
    with pytest.raises(WeightsError, match="cannot download .*gone.pth"):
        fetch_weights(gone, dest_dir=dest)
    assert sorted(p.name for p in dest.iterdir()) == ["w.bin"]


def test_a_download_cut_short_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    # The server closed after 10 of 100,000 bytes: without a digest (the trainer passes none)
    # the cut file was cached under its final name and failed later as "not a checkpoint".
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/motion_deblurring.pth"
    dest = tmp_path / "cache"
    try:
        with pytest.raises(WeightsError, match="incomplete: 10 of 100000 bytes"):
            fetch_weights(url, dest_dir=dest)
    finally:
        thread.join(10)
        server.close()
    assert list(dest.iterdir()) == []


def test_a_weights_folder_under_home_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "dmphn"
    folder.mkdir()
    # Found, then its six parts are looked for: not "~/dmphn does not exist".
    with pytest.raises(FileNotFoundError, match=f"incomplete in {folder}: missing encoder_lv1"):
        load_teacher("dmphn", weights="~/dmphn")


def test_default_weights_only_when_the_shared_copy_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.teachers import default_weights

    monkeypatch.setenv("SHARPCAM_SHARED", str(tmp_path))
    assert default_weights("dmphn") is None and default_weights("restormer") is None
    with pytest.raises(WeightsError, match="'dmphn' needs weights: a folder with encoder_lv"):
        load_teacher("dmphn")
    folder = tmp_path / "weights" / "teachers" / "dmphn_1_2_4"
    folder.mkdir(parents=True)
    assert default_weights("dmphn") == folder


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


# --------------------------------------------------------------------------------------------
# review fixes: Restormer's dual-pixel skip, loader errors, the teachers' code in cache keys
# --------------------------------------------------------------------------------------------


def test_restormer_dual_pixel_skip_comes_from_the_patch_embedding() -> None:
    # The release adds skip_conv(patch_embed(x)), not skip_conv(encoder_level1(...)): the
    # official dual-pixel defocus weights would have run a different network here.
    torch.manual_seed(0)
    model = Restormer(
        inp_channels=6,
        dual_pixel_task=True,
        dim=8,
        num_blocks=[1, 1, 1, 1],
        num_refinement_blocks=1,
        heads=[1, 1, 1, 1],
    ).eval()
    seen: dict[str, torch.Tensor] = {}
    model.patch_embed.register_forward_hook(lambda m, i, o: seen.__setitem__("embedded", o))
    model.refinement.register_forward_hook(lambda m, i, o: seen.__setitem__("refined", o))
    x = torch.rand(1, 6, 16, 24)
    with torch.no_grad():
        y = model(x)
        expected = model.output(seen["refined"] + model.skip_conv(seen["embedded"]))
    torch.testing.assert_close(y, expected)


def test_restormer_loader_names_the_file_and_the_problem(
    restormer: Restormer, tmp_path: Path
) -> None:
    garbage = tmp_path / "motion_deblurring.pth"
    garbage.write_bytes(b"an HTML error page, not weights")
    # torch's own message advised weights_only=False, i.e. running the file's code.
    with pytest.raises(RuntimeError, match="motion_deblurring.pth is not a PyTorch checkpoint"):
        load_restormer(garbage)
    with pytest.raises(RuntimeError, match="is a folder"):
        load_teacher("restormer", weights=tmp_path)  # was IsADirectoryError from torch.load
    trainer_style = tmp_path / "trainer.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3}, trainer_style)
    with pytest.raises(RuntimeError, match=r"holds no state dict.*\['epoch', 'model'\]"):
        load_restormer(trainer_style)
    bias_free = tmp_path / "gaussian_color_denoising_blind.pth"
    sd = {k: v for k, v in restormer.state_dict().items() if not k.endswith(".body.bias")}
    torch.save({"params": sd}, bias_free)
    with pytest.raises(RuntimeError, match="BiasFree LayerNorm checkpoint"):
        load_restormer(bias_free)


def test_a_folder_for_a_one_file_teacher_is_a_weights_error(tmp_path: Path) -> None:
    # The loader's RuntimeError was a traceback in the trainer, which turns a WeightsError into
    # one line and exit status 2.
    with pytest.raises(
        WeightsError, match=r"'restormer' needs motion_deblurring.pth .* is a folder"
    ):
        load_teacher("restormer", weights=tmp_path)


def test_a_weights_file_that_is_not_the_teachers_is_a_weights_error(tmp_path: Path) -> None:
    # The loaders' RuntimeError (no checkpoint, another network's, a damaged DMPHN part) was a
    # traceback in the trainer and cache_teacher, which report a WeightsError in one line.
    garbage = tmp_path / "motion_deblurring.pth"
    garbage.write_bytes(b"an HTML error page, not weights")
    with pytest.raises(WeightsError, match="'restormer': .*is not a PyTorch checkpoint"):
        load_teacher("restormer", weights=garbage)
    other = tmp_path / "other.pth"
    torch.save({"params": {"layer1.weight": torch.zeros(1)}}, other)
    with pytest.raises(WeightsError, match="other.pth does not match Restormer"):
        load_teacher("restormer", weights=other)
    folder = tmp_path / "dmphn"
    folder.mkdir()
    model = DMPHN()
    for part in ("encoder_lv1", "encoder_lv2", "encoder_lv3", "decoder_lv1", "decoder_lv2"):
        torch.save(getattr(model, part).state_dict(), folder / f"{part}.pkl")
    (folder / "decoder_lv3.pkl").write_bytes(b"cut short")
    with pytest.raises(WeightsError, match="'dmphn': .*decoder_lv3.pkl is not a PyTorch state"):
        load_teacher("dmphn", weights=folder)
    # Whole, it is read on the CPU and then moved: a device that cannot take it is that
    # device's error, not "damaged weights".
    torch.save(model.decoder_lv3.state_dict(), folder / "decoder_lv3.pkl")
    moved = load_teacher("dmphn", weights=folder, device="meta")
    assert {p.device.type for p in moved.parameters()} == {"meta"}
    with pytest.raises(RuntimeError, match="vulkan") as got:  # a torch built without it
        load_teacher("dmphn", weights=folder, device="vulkan")
    assert not isinstance(got.value, WeightsError), got.value


def test_weights_of_another_network_are_refused_in_a_short_line(tmp_path: Path) -> None:
    # Every key name of both networks, on one line: 20-40 KB for a file of another network.
    dmphn = DMPHN()
    other = tmp_path / "dmphn_part.pth"
    torch.save(dmphn.encoder_lv1.state_dict(), other)
    with pytest.raises(WeightsError) as exc:
        load_teacher("restormer", weights=other)
    said = str(exc.value)
    assert len(said) < 500 and "\n" not in said, said
    n_restormer = len(Restormer().state_dict())
    assert said.startswith(f"teacher 'restormer': {other} does not match Restormer: ")
    assert f"missing keys: {n_restormer} (" in said
    assert "unexpected keys: 30 (layer1.bias, layer1.weight, layer10.0.bias, ...)" in said
    # The BiasFree hint, and shape mismatches, keep their place in the line.
    sd = {k: v for k, v in Restormer().state_dict().items() if not k.endswith(".body.bias")}
    sd["output.weight"] = torch.zeros(3, 96, 1, 1)
    bias_free = tmp_path / "denoise.pth"
    torch.save(sd, bias_free)
    with pytest.raises(WeightsError) as exc:
        load_teacher("restormer", weights=bias_free)
    said = str(exc.value)
    assert len(said) < 600 and "(a BiasFree LayerNorm checkpoint: " in said, said
    assert "; unexpected keys" not in said  # none: left out, not "0 ()"
    assert "shape mismatches: 1 (output.weight: checkpoint (3, 96, 1, 1) vs model " in said
    # DMPHN's six parts: the part's file and the counts.
    folder = tmp_path / "dmphn"
    folder.mkdir()
    for part in ("encoder_lv1", "encoder_lv2", "encoder_lv3", "decoder_lv1", "decoder_lv2"):
        torch.save(getattr(dmphn, part).state_dict(), folder / f"{part}.pkl")
    torch.save({f"net.{i}.weight": torch.zeros(1) for i in range(40)}, folder / "decoder_lv3.pkl")
    with pytest.raises(WeightsError) as exc:
        load_teacher("dmphn", weights=folder)
    said = str(exc.value)
    assert len(said) < 400, said
    assert "decoder_lv3.pkl does not match DMPHN decoder_lv3: missing keys: " in said
    assert "; unexpected keys: 40 (net.0.weight, net.1.weight, net.2.weight, ...)" in said


def test_dmphn_loader_names_a_damaged_part(tmp_path: Path) -> None:
    model = DMPHN()
    for part in ("encoder_lv1", "encoder_lv2", "encoder_lv3"):
        torch.save(getattr(model, part).state_dict(), tmp_path / f"{part}.pkl")
    for part in ("decoder_lv1", "decoder_lv3"):
        torch.save(getattr(model, part).state_dict(), tmp_path / f"{part}.pkl")
    (tmp_path / "decoder_lv2.pkl").write_bytes(b"cut short by a failed copy")
    with pytest.raises(RuntimeError, match=r"decoder_lv2.pkl is not a PyTorch state dict"):
        load_dmphn(tmp_path)
    torch.save([1, 2], tmp_path / "decoder_lv2.pkl")
    with pytest.raises(RuntimeError, match=r"decoder_lv2.pkl holds list, not a state dict"):
        load_dmphn(tmp_path)
    # A wrong shape in one of three decoders that share key names: the message names the file
    # (torch's own size-mismatch error did not).
    sd = model.decoder_lv3.state_dict()
    torch.save(model.decoder_lv2.state_dict(), tmp_path / "decoder_lv2.pkl")
    sd["layer24.weight"] = torch.zeros(3, 32, 5, 5)
    torch.save(sd, tmp_path / "decoder_lv3.pkl")
    with pytest.raises(
        RuntimeError,
        match=r"decoder_lv3.pkl does not match DMPHN decoder_lv3: wrong shapes: "
        r"layer24.weight \(3, 32, 5, 5\) \(expected \(3, 32, 3, 3\)\)",
    ):
        load_dmphn(tmp_path)


def test_dmphn_weights_must_be_a_folder(tmp_path: Path) -> None:
    model = DMPHN()
    for part in ("encoder_lv1", "encoder_lv2", "encoder_lv3"):
        torch.save(getattr(model, part).state_dict(), tmp_path / f"{part}.pkl")
    one_file = tmp_path / "encoder_lv1.pkl"
    for route in (load_dmphn, lambda w: load_teacher("dmphn", weights=w)):
        for where, what in ((one_file, "is a file"), (tmp_path / "nope", "does not exist")):
            with pytest.raises((FileNotFoundError, WeightsError), match=what) as exc:
                route(where)
            assert "a folder with encoder_lv" in str(exc.value)
    with pytest.raises(FileNotFoundError, match="missing decoder_lv1.pkl, decoder_lv2.pkl"):
        load_dmphn(tmp_path)


def test_code_fingerprint_ignores_comments_docstrings_and_layout_not_code() -> None:
    a = 'def f(x):\n    """Doc."""\n    return x * 2  # double\n'
    b = '# header\ndef f(x):\n    """Other words."""\n\n    return (\n        x * 2\n    )\n'
    c = "def f(x):\n    return x * 3\n"
    assert code_fingerprint(a) == code_fingerprint(b) != code_fingerprint(c)
    # A method's source as inspect.getsource gives it, indented, is the same code.
    indented = "    def g(self):\n        return 1\n"
    assert code_fingerprint(indented) == code_fingerprint("def g(self):\n    return 1\n")
    assert code_fingerprint(a, c) != code_fingerprint(c, a)


def test_teacher_code_fingerprint_is_the_networks_module() -> None:
    import training.models.dmphn as dmphn_module

    source = Path(dmphn_module.__file__).read_text()
    assert teacher_code_fingerprint("dmphn") == code_fingerprint(source)
    assert teacher_code_fingerprint("restormer") != teacher_code_fingerprint("dmphn")
    assert teacher_code_fingerprint("nope") == ""


class _Patches:
    """Stands in for the training dataset build_cache draws from: patch ``i`` is seeded by
    ``i``, so a resumed build continues the same stream."""

    rank = 0
    patch = 0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i))
        return {"blur": img, "sharp": img}


class _Counting:
    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return x


def test_training_teacher_cache_records_and_checks_the_teachers_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.cache_teacher import build_cache, check_cache_meta
    from training.config import ConfigError, TrainConfig

    cfg = TrainConfig()
    cache = tmp_path / "cache.pt"

    def build(count: int) -> int:
        teacher = _Counting()
        build_cache(cfg, teacher=teacher, dataset=_Patches(), out=cache, count=count)  # type: ignore[arg-type]
        return teacher.seen

    def rewrite_meta(**changes: object) -> dict:
        data = torch.load(cache, weights_only=True)
        data["meta"].update(changes)
        data["meta"] = {k: v for k, v in data["meta"].items() if v is not None}
        torch.save(data, cache)
        return data["meta"]

    assert build(2) == 2
    meta = torch.load(cache, weights_only=True)["meta"]
    assert meta["teacher_code"] == teacher_code_fingerprint("dmphn")
    check_cache_meta(meta, cfg, cache)
    # Made by other code of the same teacher, same weights: its targets are stale. The trainer
    # refuses it (it used to distil on them), and a build starts over instead of extending it.
    stale = rewrite_meta(teacher_code="0" * 64)
    with pytest.raises(ConfigError, match="teacher code: the dmphn network's code changed"):
        check_cache_meta(stale, cfg, cache)
    assert build(3) == 3
    # Made before the code was recorded: which code made it is unknown. Used with a warning
    # (not thrown away), extended, and still not claimed for this code.
    older = rewrite_meta(teacher_code=None)
    with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
        check_cache_meta(older, cfg, cache)
    assert "does not record the teacher's code" in caplog.text
    assert build(4) == 1
    assert "teacher_code" not in torch.load(cache, weights_only=True)["meta"]


def test_training_teacher_cache_is_stale_when_the_weights_change_at_the_same_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.cache_teacher import build_cache, check_cache_meta, teacher_weights_digest
    from training.config import ConfigError, TrainConfig

    weights = tmp_path / "teacher.pth"
    weights.write_bytes(b"old weights")
    cfg = TrainConfig()
    cfg.teacher.weights = str(weights)
    cache = tmp_path / "cache.pt"

    def build(count: int) -> int:
        teacher = _Counting()
        build_cache(cfg, teacher=teacher, dataset=_Patches(), out=cache, count=count)  # type: ignore[arg-type]
        return teacher.seen

    assert build(2) == 2
    meta = torch.load(cache, weights_only=True)["meta"]
    check_cache_meta(meta, cfg, cache)
    # New weights saved over the same path: the cached targets are the old weights' outputs.
    # The path alone matched, and the trainer distilled on them; now refused, and a build
    # starts over instead of extending the file.
    weights.write_bytes(b"new weights")
    with pytest.raises(ConfigError, match="teacher weights: the contents of .*teacher.pth changed"):
        check_cache_meta(meta, cfg, cache)
    assert build(3) == 3
    check_cache_meta(torch.load(cache, weights_only=True)["meta"], cfg, cache)
    # A folder (DMPHN's layout) is its files' contents: one file changed is other weights.
    folder = tmp_path / "dmphn"
    folder.mkdir()
    (folder / "encoder_lv1.pkl").write_bytes(b"a")
    (folder / "decoder_lv1.pkl").write_bytes(b"b")
    cfg_dir = TrainConfig()
    cfg_dir.teacher.weights = str(folder)
    before = teacher_weights_digest(cfg_dir)
    (folder / "decoder_lv1.pkl").write_bytes(b"c")
    assert before is not None and teacher_weights_digest(cfg_dir) != before
    # Made before the weights' contents were recorded: used with a warning that says how to
    # rebuild, extended, and its digest still not claimed for these weights.
    data = torch.load(cache, weights_only=True)
    del data["meta"]["teacher_weights_digest"]
    torch.save(data, cache)
    with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
        check_cache_meta(data["meta"], cfg, cache)
    assert "does not record its teacher weights' contents" in caplog.text
    assert "python -m training.cache_teacher" in caplog.text
    assert build(4) == 1
    assert "teacher_weights_digest" not in torch.load(cache, weights_only=True)["meta"]


def test_training_teacher_cache_is_the_same_weights_under_another_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from training.cache_teacher import build_cache, check_cache_meta
    from training.config import ConfigError, TrainConfig

    shared = tmp_path / "shared"
    folder = shared / "weights" / "teachers" / "dmphn_1_2_4"
    folder.mkdir(parents=True)
    (folder / "encoder_lv1.pkl").write_bytes(b"the weights")
    monkeypatch.setenv("SHARPCAM_SHARED", str(shared))
    shutil.copytree(folder, tmp_path / "copy")
    by_default = TrainConfig()  # teacher.weights "": the shared copy
    named = TrainConfig()
    named.teacher.weights = str(folder)
    copied = TrainConfig()
    copied.teacher.weights = str(tmp_path / "copy")
    cache = tmp_path / "cache.pt"

    def build(cfg: TrainConfig, count: int) -> int:
        teacher = _Counting()
        build_cache(cfg, teacher=teacher, dataset=_Patches(), out=cache, count=count)  # type: ignore[arg-type]
        return teacher.seen

    assert build(by_default, 2) == 2
    meta = torch.load(cache, weights_only=True)["meta"]
    # The same bytes, named by their path or copied elsewhere, give the same outputs. Their
    # digests are compared; the spellings were, and the trainer refused the cache while a
    # build threw it away and started over (hours of teacher time on a CPU).
    check_cache_meta(meta, named, cache)
    check_cache_meta(meta, copied, cache)
    assert build(named, 3) == 1
    # Other weights are still other weights, whatever they are called.
    (folder / "encoder_lv1.pkl").write_bytes(b"other weights")
    with pytest.raises(ConfigError, match="teacher weights: the contents"):
        check_cache_meta(meta, by_default, cache)
    with pytest.raises(ConfigError, match="teacher weights: the contents"):
        check_cache_meta(meta, named, cache)


class _RankPatches:
    """Patch ``i`` of stream ``rank``: its blurry pixels are seeded by both, so a cache tells
    which stream and which index each of its patches came from."""

    rank = 0
    patch = 0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1_000_003 * self.rank + i)
        img = torch.rand(3, 8, 8, generator=g)
        return {"blur": img, "sharp": img.flip(2)}


def test_training_teacher_cache_draws_its_own_stream_and_extends_it(tmp_path: Path) -> None:
    from training.cache_teacher import CACHE_STREAM, build_cache
    from training.config import TrainConfig
    from training.data import content_hash, to_uint8

    cfg = TrainConfig()
    cache = tmp_path / "cache.pt"
    data = _RankPatches()  # rank 0: a training rank's stream
    build_cache(cfg, teacher=_Counting(), dataset=data, out=cache, count=2)  # type: ignore[arg-type]
    build_cache(cfg, teacher=_Counting(), dataset=data, out=cache, count=4)  # type: ignore[arg-type]
    got = torch.load(cache, weights_only=True)
    own = _RankPatches()
    own.rank = CACHE_STREAM
    want = [to_uint8(own[i]["blur"].permute(1, 2, 0).numpy()) for i in range(4)]
    # patches 0-3 of the cache's stream, never the training rank's; extended, not repeated
    assert torch.equal(got["blur"], torch.from_numpy(np.stack(want)))
    assert got["keys"] == [content_hash(w) for w in want]
    sharp = [to_uint8(own[i]["sharp"].permute(1, 2, 0).numpy()) for i in range(4)]
    assert torch.equal(got["sharp"], torch.from_numpy(np.stack(sharp)))


def test_training_teacher_cache_stores_the_rounded_clamped_output(tmp_path: Path) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    def teacher(x: torch.Tensor) -> torch.Tensor:
        # out of range both ways, and a level between two uint8 steps
        y = torch.empty_like(x)
        y[:, 0], y[:, 1], y[:, 2] = 1.7, -0.3, 100.6 / 255
        return y

    cache = tmp_path / "cache.pt"
    build_cache(TrainConfig(), teacher=teacher, dataset=_Patches(), out=cache, count=2)  # type: ignore[arg-type]
    out = torch.load(cache, weights_only=True)["teacher"]
    assert out.dtype == torch.uint8 and out.shape == (2, 8, 8, 3)
    assert out[..., 0].eq(255).all() and out[..., 1].eq(0).all() and out[..., 2].eq(101).all()


def test_training_teacher_cache_refuses_a_teacher_giving_0_to_255(tmp_path: Path) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    # Clamped to [0, 1], its outputs were white patches, cached without a word.
    cache = tmp_path / "cache.pt"
    with pytest.raises(ValueError, match=r"outputs of mean .* about \[0, 1\] \(one giving 0-255"):
        build_cache(
            TrainConfig(),
            teacher=lambda x: x * 255,  # type: ignore[arg-type]
            dataset=_Patches(),  # type: ignore[arg-type]
            out=cache,
            count=2,
        )
    assert not cache.exists()


class _LevelPatches(_Patches):
    """Patches of levels ``low`` to ``high`` only (a night scene's, a snowfield's), seeded as
    _Patches'."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = self.low + super().__getitem__(i)["blur"] * (self.high - self.low)
        return {"blur": img, "sharp": img}


def test_training_teacher_cache_refuses_a_teacher_in_another_range_on_any_patches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    # The mean of the outputs alone, within [-1, 2], let through a teacher giving -1 to 1
    # (tanh: clamped, its dark half cached black) and one giving 0-255 on dark patches.
    for teacher, data in (
        (lambda x: 2 * x - 1, _Patches()),
        (lambda x: 2 * x - 1, _LevelPatches(0, 0.3)),
        (lambda x: x * 255, _LevelPatches(0, 0.01)),
    ):
        cache = tmp_path / "cache.pt"
        with pytest.raises(ValueError, match=r"about \[0, 1\] \(one giving 0-255, or -1 to 1"):
            build_cache(TrainConfig(), teacher=teacher, dataset=data, out=cache, count=2)  # type: ignore[arg-type]
        assert not cache.exists()
    # The command line says so in one line, exit 1 (a traceback before).
    from training import cache_teacher

    build = cache_teacher.build_cache

    def wrong_range(cfg: TrainConfig, **kw: object) -> None:
        kw.pop("device", None)
        build(cfg, teacher=lambda x: 2 * x - 1, dataset=_Patches(), **kw)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache_teacher, "build_cache", wrong_range)
        with pytest.raises(SystemExit) as e:
            cache_teacher.main(["--device", "cpu", "--out", str(cache), "--count", "2"])
    assert e.value.code == 1 and not cache.exists()
    assert "cache_teacher: error: teacher 'dmphn' gave outputs of mean" in capsys.readouterr().err
    # A teacher in range is taken on patches near black and near white alike.
    for data in (_LevelPatches(0, 0.02), _LevelPatches(0.97, 1)):
        cache = tmp_path / "ok.pt"
        cache.unlink(missing_ok=True)
        build_cache(TrainConfig(), teacher=lambda x: x, dataset=data, out=cache, count=2)  # type: ignore[arg-type]
        assert cache.exists()


@pytest.mark.parametrize(
    "overshoot",
    [lambda x: x + 0.2, lambda x: x - 0.2, lambda x: torch.where(x == x.max(), 40.0, x)],
    ids=["bright", "dark", "halo"],
)
def test_training_teacher_cache_takes_a_teacher_overshooting_0_to_1(
    tmp_path: Path, overshoot: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    # Only outputs of another scale are refused: a deblurring teacher overshoots on a bright
    # or dark patch (its mean within 0.25 of its input's), or in a halo at a strong edge, and
    # its clamped output is what it meant.
    cache = tmp_path / "cache.pt"
    build_cache(TrainConfig(), teacher=overshoot, dataset=_Patches(), out=cache, count=2)  # type: ignore[arg-type]
    assert torch.load(cache, weights_only=True)["teacher"].shape == (2, 8, 8, 3)


def test_training_teacher_cache_starts_over_when_its_patches_would_differ(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.cache_teacher import build_cache, check_cache_meta
    from training.config import TrainConfig

    cache = tmp_path / "cache.pt"

    def build(cfg: TrainConfig, count: int) -> int:
        teacher = _Counting()
        build_cache(cfg, teacher=teacher, dataset=_Patches(), out=cache, count=count)  # type: ignore[arg-type]
        return teacher.seen

    def changed(**kw: object) -> TrainConfig:
        cfg = TrainConfig()
        for key, value in kw.items():
            obj = cfg
            *parents, last = key.split("__")
            for part in parents:
                obj = getattr(obj, part)
            setattr(obj, last, value)
        return cfg

    for cfg in (
        changed(seed=1),
        changed(teacher__cache_patch=128),  # patches of another size
        changed(data__exclude=["*/photo_000.png"]),  # a photo excluded since
        changed(data__raw_train_range=[1, 299]),  # held-out frames
    ):
        assert build(TrainConfig(), 2) == 2
        assert build(cfg, 3) == 3  # not extended
    # A data setting the cache records and this code no longer has: what it did is unknown.
    assert build(TrainConfig(), 2) == 2
    data = torch.load(cache, weights_only=True)
    data["meta"]["data"]["removed_setting"] = 3
    torch.save(data, cache)
    with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
        check_cache_meta(data["meta"], TrainConfig(), cache)
    assert "other data settings (removed_setting)" in caplog.text
    assert build(TrainConfig(), 3) == 3


def test_training_teacher_cache_of_other_frames_or_weights_is_refused(tmp_path: Path) -> None:
    from training.cache_teacher import build_cache, check_cache_meta
    from training.config import ConfigError, TrainConfig

    cfg = TrainConfig()
    cfg.teacher.weights = str(tmp_path / "absent_a.pth")  # no file here: no digest to compare
    cache = tmp_path / "cache.pt"
    build_cache(cfg, teacher=_Counting(), dataset=_Patches(), out=cache, count=1)  # type: ignore[arg-type]
    meta = torch.load(cache, weights_only=True)["meta"]
    check_cache_meta(meta, cfg, cache)
    # made from training windows that reach into the held-out frames 240-299
    leaky = {**meta, "data": {**meta["data"], "raw_train_range": [1, 299]}}
    with pytest.raises(ConfigError, match=r"data.raw_train_range: cache \[1, 299\]"):
        check_cache_meta(leaky, cfg, cache)
    other = TrainConfig()
    other.teacher.weights = str(tmp_path / "absent_b.pth")
    with pytest.raises(ConfigError, match="teacher.teacher_weights: cache .*absent_a"):
        check_cache_meta(meta, other, cache)


def test_training_teacher_cache_keeps_its_time_budget_and_writes_an_empty_file(
    tmp_path: Path,
) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    cfg = TrainConfig()
    cfg.teacher.cache_batch = 1
    cache = tmp_path / "cache.pt"
    teacher = _Counting()
    build_cache(cfg, teacher=teacher, dataset=_Patches(), out=cache, count=3, max_minutes=1e-9)  # type: ignore[arg-type]
    assert teacher.seen == 1 and len(torch.load(cache, weights_only=True)["keys"]) == 1
    cfg.teacher.cache_count = 0
    empty = tmp_path / "empty.pt"
    build_cache(cfg, teacher=teacher, dataset=_Patches(), out=empty)  # type: ignore[arg-type]
    got = torch.load(empty, weights_only=True)
    assert got["keys"] == [] and got["blur"].shape[0] == 0 and got["meta"]["patch"] == 256


def test_training_teacher_cache_ends_saying_where_it_went_and_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    # It ended on "teacher cache: 2/2 patches (0.1 s per patch)": not the file (--out defaults
    # to the config's teacher.cache_path) nor its size.
    cfg = TrainConfig()
    cfg.teacher.cache_batch = 1
    cache = tmp_path / "cache.pt"
    for count, minutes, kept in ((2, 0.0, 2), (4, 1e-9, 3)):  # the second stops on its budget
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="training.cache_teacher"):
            build_cache(
                cfg,
                teacher=_Counting(),
                dataset=_Patches(),  # type: ignore[arg-type]
                out=cache,
                count=count,
                max_minutes=minutes,
            )
        size = cache.stat().st_size / 2**20
        assert caplog.records[-1].getMessage() == (
            f"teacher cache: {kept} of {count} patches in {cache} ({size:.1f} MiB)"
        )


def test_training_teacher_cache_without_a_path_is_refused_before_any_work() -> None:
    from training.cache_teacher import build_cache
    from training.config import ConfigError, TrainConfig

    teacher = _Counting()
    with pytest.raises(ConfigError, match="teacher.cache_path is empty"):
        build_cache(TrainConfig(), teacher=teacher, dataset=_Patches(), count=1)  # type: ignore[arg-type]
    assert teacher.seen == 0  # Path("") is ".": it ran a chunk, then failed to save it


def test_training_teacher_cache_of_other_settings_is_moved_aside_not_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    cache = tmp_path / "cache.pt"
    build_cache(TrainConfig(), teacher=_Counting(), dataset=_Patches(), out=cache, count=2)  # type: ignore[arg-type]
    made = cache.read_bytes()
    other = TrainConfig()
    other.seed = 1
    # It was overwritten with only a warning: hours of teacher time on a CPU, gone.
    with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
        build_cache(other, teacher=_Counting(), dataset=_Patches(), out=cache, count=1)  # type: ignore[arg-type]
    kept = tmp_path / "previous_1" / "cache.pt"
    assert kept.read_bytes() == made
    assert f"moved to {kept}" in caplog.text
    assert torch.load(cache, weights_only=True)["meta"]["seed"] == 1
    # A second change of settings keeps the second cache too.
    build_cache(TrainConfig(), teacher=_Counting(), dataset=_Patches(), out=cache, count=1)  # type: ignore[arg-type]
    assert torch.load(tmp_path / "previous_2" / "cache.pt", weights_only=True)["meta"]["seed"] == 1


def _not_caches(tmp_path: Path) -> dict[str, Path]:
    """Files (and a folder) an --out may name by mistake, by case."""
    checkpoint = tmp_path / "last.pt"  # what the trainer writes
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "config": {}}, checkpoint)
    text = tmp_path / "notes.txt"
    text.write_text("not a cache\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"checkpoint": checkpoint, "text": text, "folder": folder}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("checkpoint", r"not a teacher cache \(no blur, sharp, teacher, keys, meta"),
        ("text", r"not a teacher cache \(torch cannot read it"),
        ("folder", "is not a file, so not a teacher cache"),
    ],
)
def test_training_teacher_cache_refuses_to_overwrite_what_is_not_one(
    case: str, message: str, tmp_path: Path
) -> None:
    from training.cache_teacher import build_cache
    from training.config import ConfigError, TrainConfig

    target = _not_caches(tmp_path)[case]
    before = target.read_bytes() if target.is_file() else None
    teacher = _Counting()
    with pytest.raises(ConfigError, match=message) as e:
        build_cache(TrainConfig(), teacher=teacher, dataset=_Patches(), out=target, count=1)  # type: ignore[arg-type]
    assert "\n" not in str(e.value) and "--out" in str(e.value)
    assert teacher.seen == 0
    assert (target.read_bytes() if target.is_file() else None) == before
    assert not (tmp_path / "previous_1").exists()


def test_cache_teacher_command_line_refuses_an_out_that_is_not_a_cache_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import cache_teacher, teachers

    def no_teacher(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher was loaded before --out was checked")

    monkeypatch.setattr(teachers, "load_teacher", no_teacher)
    checkpoint = _not_caches(tmp_path)["checkpoint"]
    with pytest.raises(SystemExit) as e:
        cache_teacher.main(["--out", str(checkpoint), "--device", "cpu"])
    assert e.value.code == 2
    assert f"error: {checkpoint} is not a teacher cache" in capsys.readouterr().err


def test_cache_teacher_command_line_passes_its_options_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import cache_teacher

    calls: list[tuple] = []
    monkeypatch.setattr(cache_teacher, "build_cache", lambda cfg, **kw: calls.append((cfg, kw)))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("teacher: {cache_count: 9}\n")
    argv = ["--config", str(cfg_file), "--count", "5", "--out", "x.pt", "--max_minutes", "2"]
    cache_teacher.main([*argv, "--device", "cpu", "--teacher.cache_patch=64"])
    cache_teacher.main(["--config", str(cfg_file), "--device", "cpu"])
    (cfg, kw), (cfg2, kw2) = calls
    assert cfg.teacher.cache_patch == 64 and cfg.teacher.cache_count == 9
    # --device comes resolved, as train's (f983a6b): torch.device("cpu") != "cpu".
    assert kw == {"out": "x.pt", "count": 5, "max_minutes": 2.0, "device": torch.device("cpu")}
    # without --count / --out: the config's teacher.cache_count and teacher.cache_path
    assert kw2["count"] is None and kw2["out"] is None and cfg2.teacher.cache_patch == 256


def test_cache_teacher_help_lists_threads_and_threads_sets_torchs_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import cache_teacher

    # It worked as the config's --threads=N, and --help did not list it.
    with pytest.raises(SystemExit):
        cache_teacher.main(["--help"])
    helped = " ".join(capsys.readouterr().out.split())
    assert "--threads N torch CPU threads (default: the config's threads; 0 = " in helped
    calls: list[tuple] = []
    threads: list[int] = []
    monkeypatch.setattr(cache_teacher, "build_cache", lambda cfg, **kw: calls.append(cfg))
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # not this test process's
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("threads: 3\n")
    cache_teacher.main(["--config", str(cfg_file), "--device", "cpu"])
    cache_teacher.main(["--config", str(cfg_file), "--device", "cpu", "--threads", "2"])
    cache_teacher.main(["--config", str(cfg_file), "--device", "cpu", "--threads=1"])
    cache_teacher.main(["--config", str(cfg_file), "--device", "cpu", "--threads", "0"])
    assert threads == [3, 2, 1] and [cfg.threads for cfg in calls] == [3, 2, 1, 0]
    with pytest.raises(SystemExit) as e:
        cache_teacher.main(["--device", "cpu", "--threads", "-1"])
    assert e.value.code == 2
    assert "--threads: expected a number >= 0, got -1" in capsys.readouterr().err


def test_the_help_where_a_user_picks_online_or_cached_says_what_each_measured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from training import cache_teacher, train

    card = (Path(__file__).resolve().parents[1] / "weights" / "MODEL_CARD.md").read_text()
    for tool in (train, cache_teacher):
        with pytest.raises(SystemExit):
            tool.main(["--help"])
        helped = " ".join(capsys.readouterr().out.split())
        assert "--teacher.mode=online runs the teacher every step" in helped
        assert "online gained +0.23 dB plain, -0.28 linear light and +0.22 on real blur" in helped
        assert "the cache +0.25, -0.53 and +0.09" in helped
        # The section it cites is there to read.
        section = helped.split('Status: "')[1].split('"')[0]
        assert f"**{section}**" in card


def test_cache_teacher_command_line_refuses_negative_counts_and_budgets_and_damaged_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_training_data import _flip_a_byte_of
    from training import cache_teacher
    from training.config import ConfigError, TrainConfig

    calls: list[dict] = []
    monkeypatch.setattr(cache_teacher, "build_cache", lambda cfg, **kw: calls.append(kw))
    for bad, said in (
        (["--count", "-1"], "--count: expected a number of patches >= 0, got -1"),
        (["--max_minutes", "-1"], "--max_minutes: expected a finite number >= 0"),
        (["--max_minutes", "nan"], "--max_minutes: expected a finite number >= 0, got nan"),
        # not a budget: it never stops, as NaN never did
        (["--max_minutes", "inf"], "--max_minutes: expected a finite number >= 0, got inf"),
        (["--teacher.cache_count=-3"], "teacher.cache_count: expected a number >= 0, got -3"),
        # torch's "Expected one of cpu, cuda, ipu, ..." came as a traceback.
        (["--device", "bogus"], "--device bogus: not a torch device (cpu, cuda, cuda:N, mps)"),
        (["--device", "mps"], "--device mps: mps asked for, but no MPS device is available"),
        # Devices torch knows and training does not run on went on to fail mid-build.
        (["--device", "meta"], "--device meta: meta is not a device training runs on (cpu, "),
        (["--device", "xpu"], "--device xpu: xpu is not a device training runs on (cpu, "),
    ):
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        with pytest.raises(SystemExit) as e:
            cache_teacher.main(["--device", "cpu", *bad])
        assert e.value.code == 2 and said in capsys.readouterr().err
    assert calls == []  # -1 wrote an empty cache (moving one of other settings aside)
    monkeypatch.undo()
    # A damaged cache is not extended: its damage would pass into the new file's checksums.
    cache = tmp_path / "cache.pt"
    cache_teacher.build_cache(
        TrainConfig(), teacher=_Counting(), dataset=_Patches(), out=cache, count=2
    )  # type: ignore[arg-type]
    _flip_a_byte_of(cache, "data/2")
    teacher = _Counting()
    with pytest.raises(ConfigError, match="is a damaged teacher cache"):
        cache_teacher.build_cache(
            TrainConfig(), teacher=teacher, dataset=_Patches(), out=cache, count=3
        )  # type: ignore[arg-type]
    assert teacher.seen == 0


def test_load_teacher_refuses_a_digest_it_cannot_check(tmp_path: Path) -> None:
    from training.models.dmphn import _PARTS

    model = DMPHN()
    for part in _PARTS:  # the folder layout of the authors' release
        torch.save(getattr(model, part).state_dict(), tmp_path / f"{part}.pkl")
    assert not load_teacher("dmphn", weights=tmp_path).training
    # A folder has no one digest: the sha256 was ignored and the caller thought it verified.
    with pytest.raises(WeightsError, match="a digest verifies one weights file"):
        load_teacher("dmphn", weights=tmp_path, sha256="0" * 64)


def test_code_fingerprint_reads_a_bom_and_crlf_file_as_the_interpreter_does(
    tmp_path: Path,
) -> None:
    # A module saved with a byte-order mark (Windows editors) imports fine, but ast.parse of
    # its text raised SyntaxError: the evaluation stopped with a traceback.
    from training.teachers import read_source

    text = "def f(x):\n    return x + 1\n"
    plain, marked = tmp_path / "plain.py", tmp_path / "marked.py"
    plain.write_bytes(text.encode())
    marked.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert code_fingerprint(read_source(marked)) == code_fingerprint(read_source(plain))


def test_code_fingerprint_ignores_empty_parts_of_an_fstring() -> None:
    # Python 3.12.1 parses f"{b!r:>{w}}" with an extra empty Constant in the format spec; the
    # fingerprint (a cache key) must not change with the interpreter.
    import ast

    from training.teachers import _canonical

    tree = ast.parse('f"{b!r:>{w}}"')
    spec = next(n for n in ast.walk(tree) if isinstance(n, ast.FormattedValue)).format_spec
    assert isinstance(spec, ast.JoinedStr)
    before = _canonical(tree)
    spec.values.append(ast.Constant(value=""))
    assert _canonical(tree) == before
    spec.values.append(ast.Constant(value="x"))
    assert _canonical(tree) != before


def test_load_teacher_checks_a_weights_files_digest(tmp_path: Path) -> None:
    # A digest given for a file is a promise the weights are the ones meant: a damaged or
    # substituted download must be refused before it is loaded, not silently used.
    path = tmp_path / "motion_deblurring.pth"
    path.write_bytes(b"not the official weights")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_teacher("restormer", weights=path, sha256="0" * 64)


def test_code_fingerprint_ignores_the_modules_docstring() -> None:
    # Rewording a network module's opening docstring must not throw away a teacher cache that
    # cost hours of CPU time.
    assert code_fingerprint('"""Old words."""\nx = 1\n') == code_fingerprint(
        '"""New words."""\nx = 1\n'
    )


def test_code_fingerprint_leaves_out_absent_and_empty_fields() -> None:
    # Python versions differ in which fields they leave None or empty (3.12 added type_params):
    # the same code must give the same cache key whichever interpreter parsed it.
    import ast

    from training.teachers import _canonical

    bare = ast.arg(arg="x")
    full = ast.arg(arg="x", annotation=None, type_comment=None)
    assert _canonical(bare) == _canonical(full) == "arg(arg='x')"
    # A function without decorators: 3.13 may leave the list out where older versions give [].
    assert "decorator_list" not in _canonical(ast.parse("def f(x):\n    return x\n"))


def test_fetch_weights_refuses_a_folder_given_as_a_file(tmp_path: Path) -> None:
    # A folder named where a weights file is wanted is "not found", not handed to torch.load.
    with pytest.raises(WeightsError, match="weights file not found"):
        fetch_weights(tmp_path)


def test_fetch_weights_downloads_into_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Users (and CI) move caches with XDG_CACHE_HOME; ignoring it fills their home directory.
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    got = fetch_weights(src.as_uri())
    assert got == tmp_path / "xdg" / "sharpcam" / "weights" / "w.bin"
    assert got.read_bytes() == b"weights"


def test_fetch_weights_downloads_a_file_larger_than_one_chunk(tmp_path: Path) -> None:
    # Real weights are hundreds of MiB: every chunk must count towards the length check, or a
    # complete download would be refused as cut short.
    src = tmp_path / "big.pth"
    src.write_bytes(bytes(range(256)) * (6 * 1024 + 5))  # 1.5 MiB and a bit, over 1 MiB
    got = fetch_weights(src.as_uri(), dest_dir=tmp_path / "cache")
    assert got.read_bytes() == src.read_bytes()


def test_fetch_weights_names_the_download_after_the_unquoted_url(tmp_path: Path) -> None:
    # A URL quotes spaces as %20: the cached file keeps the real name, so a later call with the
    # same URL finds it, and the user recognises it.
    src = tmp_path / "motion deblurring.pth"
    src.write_bytes(b"weights")
    got = fetch_weights(src.as_uri(), dest_dir=tmp_path / "cache")
    assert got.name == "motion deblurring.pth"


def test_restormer_state_dict_loader_picks_params_and_keeps_odd_names() -> None:
    from training.models.restormer import load_state_dict_strict

    # A BasicSR checkpoint holds "params" and "params_ema": Restormer's own test scripts load
    # "params", so that is the one the official numbers were measured with.
    model = torch.nn.Linear(2, 2)
    plain = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    ema = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    load_state_dict_strict(model, {"params": plain, "params_ema": ema})
    assert torch.equal(model.weight, torch.zeros(2, 2))

    # A raw state dict whose tensor is named "params", and one where only some keys start with
    # "module.": loaded as they are, not unwrapped or stripped.
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.params = torch.nn.Parameter(torch.zeros(2))
            self.module = torch.nn.Linear(2, 2)

    odd = Odd()
    sd = {k: torch.full_like(v, 3.0) for k, v in odd.state_dict().items()}
    load_state_dict_strict(odd, sd)
    assert torch.equal(odd.params, torch.full((2,), 3.0))
    assert torch.equal(odd.module.weight, torch.full((2, 2), 3.0))


def test_restormer_loader_hints_bias_free_only_when_that_is_all_that_is_missing() -> None:
    from training.models.restormer import load_state_dict_strict

    # The "denoising weights?" hint sends the user after another file: wrong when other
    # tensors are missing too.
    sd = dict(_small_restormer().state_dict())
    del sd["encoder_level1.0.norm1.body.bias"], sd["output.weight"]
    with pytest.raises(RuntimeError, match="missing keys") as exc:
        load_state_dict_strict(_small_restormer(), sd)
    assert "BiasFree" not in str(exc.value)


def test_restormer_load_checkpoint_errors_name_the_path(tmp_path: Path) -> None:
    from training.models.restormer import load_checkpoint

    # A missing file stays a FileNotFoundError (the commands turn it into the one-line
    # missing-data message), and a folder is named as one, not torch's IsADirectoryError.
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "motion_deblurring.pth")
    with pytest.raises(RuntimeError, match="is a folder: expected one weights file"):
        load_restormer(tmp_path)


def test_restormer_refuses_other_channel_counts() -> None:
    # A 4-channel (RGBA) frame failed deep inside a conv with torch's message.
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\), got \(1, 4, 8, 8\)"):
        _small_restormer()(torch.rand(1, 4, 8, 8))


def test_teachers_take_a_frame_exactly_as_small_as_their_padding() -> None:
    # 4 rows padded by 4 to 8: reflect needs the pad strictly smaller than the size, so this is
    # the first size that must fall back to replicate instead of raising.
    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        assert _small_restormer().eval()(x).shape == (1, 3, 4, 4)
        assert DMPHN().eval()(x).shape == (1, 3, 4, 4)


def test_dmphn_feature_channels_are_the_returned_features() -> None:
    # The trainer sizes its feature-distillation adapters from feature_channels.
    model = DMPHN().eval()
    with torch.no_grad():
        _, feats = model(torch.rand(1, 3, 16, 16), return_features=True)
    assert [f.shape[1] for f in feats] == model.feature_channels == [128]


def test_dmphn_loader_refuses_missing_keys_and_pickled_objects(tmp_path: Path) -> None:
    import datetime

    from training.models.dmphn import _PARTS

    model = DMPHN()
    for part in _PARTS:
        torch.save(getattr(model, part).state_dict(), tmp_path / f"{part}.pkl")
    # A part short of a tensor would leave that layer at random init inside a "loaded" teacher.
    sd = model.decoder_lv1.state_dict()
    del sd["layer24.bias"]
    torch.save(sd, tmp_path / "decoder_lv1.pkl")
    with pytest.raises(RuntimeError, match=r"decoder_lv1.pkl .*missing keys \['layer24.bias'\]"):
        load_dmphn(tmp_path)
    # A file that needs more than tensors to unpickle is refused, not run.
    sd = dict(model.decoder_lv1.state_dict(), saved=datetime.date(2019, 6, 1))
    torch.save(sd, tmp_path / "decoder_lv1.pkl")
    with pytest.raises(RuntimeError, match="decoder_lv1.pkl is not a PyTorch state dict"):
        load_dmphn(tmp_path)
    # A number where a tensor belongs: torch's own refusal, not an AttributeError.
    sd = dict(model.decoder_lv1.state_dict())
    sd["layer24.bias"] = 3
    torch.save(sd, tmp_path / "decoder_lv1.pkl")
    with pytest.raises(RuntimeError, match="layer24.bias"):
        load_dmphn(tmp_path)


def test_training_teacher_cache_records_the_named_teachers_code() -> None:
    from training.cache_teacher import cache_meta
    from training.config import TrainConfig

    # A Restormer cache keyed on DMPHN's code would survive a fix to restormer.py.
    cfg = TrainConfig()
    cfg.teacher.name = "restormer"
    assert cache_meta(cfg)["teacher_code"] == teacher_code_fingerprint("restormer")


def test_training_teacher_cache_without_a_digest_still_compares_the_weights_path(
    tmp_path: Path,
) -> None:
    from training.cache_teacher import build_cache, check_cache_meta
    from training.config import ConfigError, TrainConfig

    # Only when both sides record the weights' contents may the path be ignored: a cache from
    # before digests, made with other weights, would otherwise pass as these weights' outputs.
    old, new = tmp_path / "old.pth", tmp_path / "new.pth"
    old.write_bytes(b"old weights")
    new.write_bytes(b"new weights")
    cfg = TrainConfig()
    cfg.teacher.weights = str(old)
    cache = tmp_path / "cache.pt"
    build_cache(cfg, teacher=_Counting(), dataset=_Patches(), out=cache, count=2)  # type: ignore[arg-type]
    data = torch.load(cache, weights_only=True)
    del data["meta"]["teacher_weights_digest"]
    torch.save(data, cache)
    cfg.teacher.weights = str(new)
    with pytest.raises(ConfigError, match="teacher.teacher_weights"):
        check_cache_meta(data["meta"], cfg, cache)
    teacher = _Counting()
    build_cache(cfg, teacher=teacher, dataset=_Patches(), out=cache, count=3)  # type: ignore[arg-type]
    assert teacher.seen == 3  # started over, not extended


def test_training_teacher_cache_that_records_no_settings_is_not_extended(tmp_path: Path) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    # Settings unknown: its patches may be of other data or another teacher, so a build starts
    # over (the old file kept aside) rather than appending to it.
    cache = tmp_path / "cache.pt"
    build_cache(TrainConfig(), teacher=_Counting(), dataset=_Patches(), out=cache, count=2)  # type: ignore[arg-type]
    data = torch.load(cache, weights_only=True)
    data["meta"] = {}
    torch.save(data, cache)
    teacher = _Counting()
    build_cache(TrainConfig(), teacher=teacher, dataset=_Patches(), out=cache, count=3)  # type: ignore[arg-type]
    assert teacher.seen == 3
    assert (tmp_path / "previous_1" / "cache.pt").is_file()


def test_training_teacher_cache_draws_new_patches_for_every_chunk(tmp_path: Path) -> None:
    from training.cache_teacher import build_cache
    from training.config import TrainConfig

    # Chunk after chunk must move on through the stream: repeated patches are wasted teacher
    # time and weight those patches twice in distillation.
    cfg = TrainConfig()
    cfg.teacher.cache_batch = 1
    cache = tmp_path / "cache.pt"
    build_cache(cfg, teacher=_Counting(), dataset=_RankPatches(), out=cache, count=3)  # type: ignore[arg-type]
    keys = torch.load(cache, weights_only=True)["keys"]
    assert len(keys) == 3 and len(set(keys)) == 3


def test_training_teacher_cache_write_that_fails_leaves_the_old_file_whole(
    tmp_path: Path,
) -> None:
    from training.cache_teacher import _save, build_cache
    from training.config import TrainConfig

    # The file is rewritten after every chunk: a write cut off (here by something that cannot
    # be pickled) must leave the previous complete cache, not a truncated one under its name.
    cache = tmp_path / "cache.pt"
    build_cache(TrainConfig(), teacher=_Counting(), dataset=_Patches(), out=cache, count=2)  # type: ignore[arg-type]
    before = cache.read_bytes()
    with pytest.raises(TypeError, match="pickle"):
        _save(cache, [], [], [], [], {"unpicklable": (i for i in ())})
    assert cache.read_bytes() == before
    # ...and frees the part written: on a full disk it holds gigabytes of patches.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.pt"]


class _StopsAt(_Counting):
    """A teacher that is Ctrl-C'd on its ``at``-th chunk, as a user would press it mid-run."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().__call__(x)


@pytest.mark.parametrize(
    ("at", "said"),
    [
        (3, "interrupted: 4 of 10 patches kept in {out}; run again to extend it"),
        (1, "interrupted: no patch of these settings saved in {out} yet"),
    ],
)
def test_cache_teacher_command_line_says_what_a_ctrl_c_kept(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    at: int,
    said: str,
) -> None:
    from training import cache_teacher, teachers, train

    teacher = _StopsAt(at)
    monkeypatch.setattr(teachers, "load_teacher", lambda *a, **kw: teacher)
    monkeypatch.setattr(train, "build_data", lambda cfg, rank: (_Patches(), None, None))
    out = tmp_path / "cache.pt"
    argv = ["--out", str(out), "--device", "cpu", "--count", "10", "--teacher.name=dmphn"]
    # weights named but absent: no digest read from a shared folder
    argv += [f"--teacher.weights={tmp_path / 'none'}", "--teacher.cache_batch=2"]
    # KeyboardInterrupt caught too: escaping, it would stop the whole test session.
    with pytest.raises((SystemExit, KeyboardInterrupt)) as e:
        cache_teacher.main(argv)
    assert e.type is SystemExit and e.value.code == 130
    err = capsys.readouterr().err
    assert said.format(out=out) in err and "Traceback" not in err
    if at > 1:  # the file is whole, and a second run extends it from where it stopped
        assert len(torch.load(out, weights_only=True)["keys"]) == 4
        teacher.at = 0
        cache_teacher.main(argv)
        assert len(torch.load(out, weights_only=True)["keys"]) == 10 and teacher.seen == 10


def test_cache_teacher_ctrl_c_while_the_teacher_loads_counts_the_patches_the_file_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import cache_teacher, teachers, train

    monkeypatch.setattr(train, "build_data", lambda cfg, rank: (_Patches(), None, None))
    monkeypatch.setattr(teachers, "load_teacher", lambda *a, **kw: _Counting())
    out = tmp_path / "cache.pt"
    argv = ["--out", str(out), "--device", "cpu", "--teacher.name=dmphn"]
    argv += [f"--teacher.weights={tmp_path / 'none'}", "--teacher.cache_batch=2"]
    cache_teacher.main([*argv, "--count", "4"])

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    # Pressed during the minutes the teacher (or the data) loads: the file held 4 patches of
    # these settings, and was said to hold none, inviting its deletion.
    monkeypatch.setattr(teachers, "load_teacher", interrupted)
    with pytest.raises((SystemExit, KeyboardInterrupt)) as e:
        cache_teacher.main([*argv, "--count", "10"])
    assert e.type is SystemExit and e.value.code == 130
    assert f"interrupted: 4 of 10 patches kept in {out}" in capsys.readouterr().err
    assert len(torch.load(out, weights_only=True)["keys"]) == 4


def test_a_ctrl_c_in_build_cache_is_still_a_keyboard_interrupt(tmp_path: Path) -> None:
    from training.cache_teacher import CacheInterrupted, build_cache
    from training.config import TrainConfig

    cfg = TrainConfig()
    cfg.teacher.cache_batch = 2
    out = tmp_path / "cache.pt"
    # Callers other than main (a notebook, a script's own KeyboardInterrupt handler) stop on a
    # Ctrl-C: an ordinary exception would be caught by their `except Exception` and run on.
    with pytest.raises(KeyboardInterrupt) as e:
        build_cache(cfg, teacher=_StopsAt(2), dataset=_Patches(), out=out, count=10)  # type: ignore[arg-type]
    assert isinstance(e.value, CacheInterrupted)
    assert (e.value.out, e.value.kept, e.value.count) == (out, 2, 10)


def test_cache_teacher_lets_go_of_a_cache_of_other_settings_while_it_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import weakref

    from training import cache_teacher
    from training.config import TrainConfig

    out = tmp_path / "cache.pt"
    cache_teacher.build_cache(
        TrainConfig(), teacher=_Counting(), dataset=_Patches(), out=out, count=2
    )  # type: ignore[arg-type]
    read = cache_teacher._existing_cache
    held: list[weakref.ref] = []

    def existing(path: Path) -> dict | None:
        old = read(path)
        held.append(weakref.ref(old["teacher"]))  # type: ignore[index]
        return old

    alive: list[bool] = []

    class Checking(_Counting):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            gc.collect()
            alive.append(held[0]() is not None)
            return super().__call__(x)

    monkeypatch.setattr(cache_teacher, "_existing_cache", existing)
    # Moved aside, the old file (gigabytes of patches) must not stay in memory for the hours
    # the new one takes to build.
    cache_teacher.build_cache(
        TrainConfig(seed=99), teacher=Checking(), dataset=_Patches(), out=out, count=2
    )  # type: ignore[arg-type]
    assert alive == [False]

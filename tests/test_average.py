"""Weight averaging: exact weighted means, a checkpoint export reads, loud refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import average as A
from training import export as E
from training.models.student import create_student
from training.teachers import sha256_file


def _checkpoint(
    path: Path, seed: int, variant: str = "tiny", *, prefix: str = "", kwargs: dict | None = None
) -> dict:
    torch.manual_seed(seed)
    model = create_student(variant, **(kwargs or {}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save(
        {
            "model": state,
            "config": {"student": variant, "student_kwargs": kwargs or {}},
            "epoch": seed,
        },
        path,
    )
    return model.state_dict()


def test_weighted_mean_and_export_reads_it(tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "a.pt", 1)
    b = _checkpoint(tmp_path / "b.pt", 2, prefix="module.")  # a DDP-style checkpoint
    out = tmp_path / "soup" / "soup.pt"
    rc = A.main(
        [str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--weights", "3,1", "--out", str(out)]
    )
    assert rc == 0
    assert [p.name for p in out.parent.iterdir()] == ["soup.pt"]  # no temp file left behind
    soup = torch.load(out, map_location="cpu", weights_only=True)
    assert soup["variant"] == "tiny"
    assert [s["weight"] for s in soup["averaged_from"]] == [0.75, 0.25]
    assert [s["sha256"] for s in soup["averaged_from"]] == [
        sha256_file(tmp_path / "a.pt"),
        sha256_file(tmp_path / "b.pt"),
    ]
    assert set(soup["model"]) == set(a)
    for k in a:
        torch.testing.assert_close(soup["model"][k], 0.75 * a[k] + 0.25 * b[k])
    assert not torch.equal(soup["model"]["stem.weight"], a["stem.weight"])
    # The digest is frozen in the soup, the one export then writes into the manifest.
    assert soup["config_digest"] == E.config_digest(soup["config"])
    assert E.stored_config_digest(out) == soup["config_digest"]

    model, variant, _ = E.load_student(out)
    assert variant == "tiny"
    ref = create_student("tiny").eval()
    ref.load_state_dict({k: 0.75 * a[k] + 0.25 * b[k] for k in a})
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_the_soup_keeps_its_first_sources_stored_digest(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "b.pt", 2)
    ck = torch.load(tmp_path / "a.pt", weights_only=True)
    ck["config_digest"] = "ab" * 32  # what the trainer stored, with the code of its day
    torch.save(ck, tmp_path / "a.pt")
    soup = A.average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    assert soup["config_digest"] == "ab" * 32


def test_the_soup_keeps_its_sources_config_histories(tmp_path: Path) -> None:
    # A source resumed under a changed config lost that history in the soup, and so in the
    # manifest export writes from it.
    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "b.pt", 2)
    _checkpoint(tmp_path / "c.pt", 3)
    histories = {
        "a": [{"until_step": 3, "config": {"lr": 0.01}, "config_digest": "ab" * 32,
               "changed": ["lr"]}],
        "b": [{"until_step": 5, "config": {"lr": 0.1}, "config_digest": "cd" * 32,
               "changed": ["lr"]}],
    }  # fmt: skip
    for name, history in histories.items():
        ck = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        torch.save({**ck, "config_history": history}, tmp_path / f"{name}.pt")
    out = tmp_path / "soup.pt"
    paths = [str(tmp_path / f"{n}.pt") for n in "abc"]
    assert A.main([*paths, "--out", str(out)]) == 0
    soup = torch.load(out, weights_only=True)
    # its config is the first source's, and so is its own history, what export reads
    assert soup["config_history"] == histories["a"] == E.stored_config_history(out)
    # each source's beside its path; none for a source whose config never changed
    assert [s.get("config_history") for s in soup["averaged_from"]] == [
        histories["a"],
        histories["b"],
        None,
    ]


def test_equal_weights_by_default() -> None:
    s1 = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    s2 = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(3)}
    out = A.average_state_dicts([s1, s2])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 3


def test_mean_is_taken_in_float64_and_keeps_each_dtype() -> None:
    # 2**25 / 3 is not a float32: accumulated in float32, its rounding swamps the answer, 2 / 3.
    big = float(2**25)
    states = [{"w": torch.tensor([big]), "h": torch.tensor([0.5]).half()} for _ in range(3)]
    states[1]["w"] = torch.tensor([2.0])
    states[2]["w"] = torch.tensor([-big])
    states[2]["h"] = torch.tensor([2.0]).half()
    out = A.average_state_dicts(states)
    torch.testing.assert_close(out["w"], torch.tensor([2 / 3]), rtol=1e-6, atol=0)
    assert out["w"].dtype == torch.float32 and out["h"].dtype == torch.float16
    assert torch.equal(out["h"], torch.tensor([1.0]).half())


def test_a_zero_weight_leaves_that_checkpoint_out() -> None:
    states = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}]
    assert torch.equal(A.average_state_dicts(states, [0.0, 2.0])["w"], states[1]["w"])


def test_students_built_with_other_options_are_refused_by_name(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "g.pt", 2, kwargs={"body_blocks": 1})
    with pytest.raises(A.AverageError, match=r"g.pt holds student 'tiny' \{'body_blocks': 1\}"):
        A.average_checkpoints([tmp_path / "a.pt", tmp_path / "g.pt"])


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "b.pt", 2)
    _checkpoint(tmp_path / "f.pt", 3, variant="fast")
    torch.save({"stem.weight": torch.zeros(1)}, tmp_path / "bare.pt")
    pa, pb = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    with pytest.raises(A.AverageError, match="holds student 'fast'"):
        A.average_checkpoints([pa, str(tmp_path / "f.pt")])
    with pytest.raises(A.AverageError, match="holds no config"):
        A.average_checkpoints([pa, str(tmp_path / "bare.pt")])
    with pytest.raises(A.AverageError, match="at least two"):
        A.average_checkpoints([pa])
    with pytest.raises(A.AverageError, match="2 weights for 3"):
        A.average_checkpoints([pa, pb, pa], [1.0, 1.0])
    for bad in ([1.0, -1.0], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(A.AverageError, match="weights must be"):
            A.average_checkpoints([pa, pb], bad)
    with pytest.raises(A.AverageError, match="shape"):
        A.average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(A.AverageError, match="different parameters"):
        A.average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])
    with pytest.raises(A.AverageError, match="non-float"):
        A.average_state_dicts([{"n": torch.tensor(1)}, {"n": torch.tensor(2)}])

    out = tmp_path / "never.pt"
    assert A.main([pa, pb, "--weights", "1,x", "--out", str(out)]) == 2
    assert A.main([pa, str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "not numbers" in err and "no such checkpoint" in err
    # A folder, or a file in the way of the folder: a traceback after the work (and a stray
    # OUT.tmp beside the folder).
    folder = tmp_path / "soups"
    folder.mkdir()
    note = tmp_path / "note.txt"
    note.write_text("mine")
    assert A.main([pa, pb, "--out", str(folder)]) == 2
    assert A.main([pa, pb, "--out", str(note / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert f"--out {folder} is a folder" in err
    assert f"{note} is a file, not a folder" in err
    assert list(folder.iterdir()) == [] and note.read_text() == "mine"
    assert not (tmp_path / "soups.tmp").exists()


def test_infinite_or_huge_weights_do_not_make_a_soup_of_nan_or_zeros() -> None:
    states = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}]
    # inf / inf normalised to NaN: every parameter of the soup was NaN.
    for bad in ([float("inf"), 1.0], [1.0, float("-inf")]):
        with pytest.raises(A.AverageError, match="finite"):
            A.average_state_dicts(states, bad)
    # A plain sum of these overflowed to inf and both weights became 0: a soup of zeros.
    out = A.average_state_dicts(states, [1e308, 1e308])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0]))
    out = A.average_state_dicts(states, [3e307, 1e307])  # 0.75 / 0.25, exactly
    assert torch.allclose(out["w"], torch.tensor([1.5, 3.0]))


def test_a_write_cut_short_leaves_the_checkpoint_named_by_out_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "b.pt", 2)
    _checkpoint(tmp_path / "soup.pt", 3)
    before = (tmp_path / "soup.pt").read_bytes()

    def cut_short(obj: object, f: str | Path) -> None:
        Path(f).write_bytes(b"PK half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(A.torch, "save", cut_short)
    # --out naming an earlier soup (its sources are refused): that checkpoint must survive.
    with pytest.raises(KeyboardInterrupt):
        A.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "soup.pt")])
    assert (tmp_path / "soup.pt").read_bytes() == before
    # The part written is freed: on a full disk it held the space that ran out.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "soup.pt"]


def test_an_out_that_is_one_of_the_inputs_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "b.pt", 2)
    (tmp_path / "link.pt").symlink_to("a.pt")
    before = {n: (tmp_path / n).read_bytes() for n in ("a.pt", "b.pt")}
    monkeypatch.chdir(tmp_path)
    # The same file under other names: a relative spelling, a path through the folder, a link.
    for out in ("./a.pt", "a.pt", str(tmp_path / "b.pt"), "link.pt", f"../{tmp_path.name}/a.pt"):
        assert A.main(["a.pt", "b.pt", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out ") and "would overwrite the input" in err
        assert err.count("\n") == 1
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert (tmp_path / "link.pt").is_symlink()

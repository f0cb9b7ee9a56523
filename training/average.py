"""Average the weights of several checkpoints of one student (a "model soup").

    python -m training.average runs/a/last.pt runs/b/last.pt --out runs/soup/soup.pt
    python -m training.average A.pt B.pt --weights 0.7,0.3 --out soup.pt

Fine-tunes that start from the same weights stay in one basin of the loss, so the weighted
mean of their parameters is itself a working network that often keeps the strengths of each
(Wortsman et al., "Model soups", ICML 2022). The result is a trainer-style checkpoint (``model``,
``config``, ``variant``, ``student_kwargs``) that `training.export` and `training.evaluate`
read like any other, plus ``averaged_from``: each source's path, sha256 and weight, and the
``config_digest`` of the config it carries (the first source's), frozen here so a re-export
months later names the same digest as the first. A source resumed under a changed config keeps
its ``config_history`` in its ``averaged_from`` entry, and the first source's is the soup's own
``config_history`` (beside its ``config``), which `training.export` writes into the manifest.
Whether a
soup is better than its ingredients is for `training.evaluate` to say; nothing here guesses.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from training.export import (
    ExportError,
    config_digest,
    folder_refusal,
    load_student,
    stored_config_digest,
    stored_config_history,
)
from training.teachers import sha256_file

log = logging.getLogger("training.average")

__all__ = ["AverageError", "average_checkpoints", "average_state_dicts"]


class AverageError(ValueError):
    """The checkpoints cannot be averaged (different students, shapes or bad weights)."""


def _normalised(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise AverageError(f"{len(weights)} weights for {n} checkpoints")
    # `not >=` also catches NaN; an infinite weight normalised to NaN (inf / inf), a soup of NaN.
    if any(not 0 <= w < math.inf for w in weights) or not any(w > 0 for w in weights):
        raise AverageError(
            f"weights must be finite and >= 0 with a positive sum, got {list(weights)}"
        )
    # Scaled by the largest first: a plain sum of huge weights (1e308, 1e308) overflows to inf
    # and every weight became 0, a soup of zeros.
    top = float(max(weights))
    scaled = [float(w) / top for w in weights]
    total = sum(scaled)
    return [w / total for w in scaled]


def average_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted mean of state dicts with identical keys and shapes.

    Floating-point tensors are averaged in float64 and cast back to their dtype; any other
    tensor (an integer counter) must be equal in every state and is copied.
    """
    if not states:
        raise AverageError("nothing to average")
    w = _normalised(weights, len(states))
    keys = list(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))
            raise AverageError(f"checkpoint {i} has different parameters: {diff[:5]}")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        ref = states[0][k]
        for i, s in enumerate(states[1:], start=1):
            if s[k].shape != ref.shape:
                raise AverageError(
                    f"{k}: shape {tuple(s[k].shape)} in checkpoint {i}, {tuple(ref.shape)} in 0"
                )
        if ref.is_floating_point():
            acc = torch.zeros(ref.shape, dtype=torch.float64)
            for wi, s in zip(w, states, strict=True):
                acc += wi * s[k].detach().to("cpu", torch.float64)
            out[k] = acc.to(ref.dtype)
        else:
            if any(not torch.equal(s[k].cpu(), ref.cpu()) for s in states[1:]):
                raise AverageError(f"{k}: non-float tensor differs between checkpoints")
            out[k] = ref.detach().cpu().clone()
    return out


def average_checkpoints(
    paths: Sequence[str | Path], weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """Load trainer checkpoints of one student and return their averaged checkpoint.

    Each is read by `training.export.load_student`, the loader export uses, so whatever it
    accepts (``module.`` prefixes, variant from the config) averages, and what it refuses fails
    here the same way.
    """
    if len(paths) < 2:
        raise AverageError(f"give at least two checkpoints, got {len(paths)}")
    w = _normalised(weights, len(paths))
    loaded = []
    for p in paths:
        try:
            model, variant, config = load_student(p)
        except ExportError as exc:
            raise AverageError(str(exc)) from None
        loaded.append((model.state_dict(), variant, config.get("student_kwargs") or {}, config))
    _, variant, kwargs, config = loaded[0]
    for p, (_, v, kw, _) in zip(paths[1:], loaded[1:], strict=True):
        if (v, kw) != (variant, kwargs):
            raise AverageError(
                f"{p} holds student {v!r} {kw}, {paths[0]} holds {variant!r} {kwargs}"
            )
    # Frozen now: computed at export time from the stored config it filled in the defaults of
    # keys added to the code since, so each re-export of the same soup named a new digest.
    digest = stored_config_digest(paths[0]) or config_digest(config)
    # Dropped, a soup of a run whose config changed on a resume read as one config throughout.
    histories = [stored_config_history(p) for p in paths]
    return {
        "model": average_state_dicts([state for state, *_ in loaded], w),
        "config": config,
        "config_digest": digest,
        "config_history": histories[0],
        "variant": variant,
        "student_kwargs": dict(kwargs),
        "averaged_from": [
            {"path": str(p), "sha256": sha256_file(Path(p)), "weight": wi}
            | ({"config_history": history} if history else {})
            for p, wi, history in zip(paths, w, histories, strict=True)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.average", description=__doc__.split("\n")[0]
    )
    p.add_argument("checkpoints", nargs="+", type=Path, help="trainer checkpoints of one student")
    p.add_argument("--weights", help="comma-separated, one per checkpoint (default: equal)")
    p.add_argument("--out", type=Path, required=True, help="where to write the averaged .pt")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        weights = None
        if args.weights:
            try:
                weights = [float(x) for x in args.weights.split(",")]
            except ValueError:
                raise AverageError(f"--weights: not numbers: {args.weights!r}") from None
        for c in args.checkpoints:
            if not c.is_file():
                raise AverageError(f"{c}: no such checkpoint")
        # Before the work: a folder there, or a file in the way of its folder, failed only at
        # the save, with a traceback (and a stray OUT.tmp beside a folder).
        if args.out.is_dir():
            raise AverageError(f"--out {args.out} is a folder; give a .pt file name")
        # The soup silently replaced that source. samefile, not the names: ./a.pt, a link to
        # it and a hard link are the same checkpoint (and an --out not there yet is no source).
        for c in args.checkpoints:
            if args.out.exists() and os.path.samefile(c, args.out):
                raise AverageError(
                    f"--out {args.out} would overwrite the input {c}; give another file name"
                )
        if (refusal := folder_refusal(args.out.parent)) is not None:
            raise AverageError(f"--out {args.out}: {refusal}")
        soup = average_checkpoints(args.checkpoints, weights)
    except AverageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # A temp file then a rename, as the trainer saves: a write cut short (Ctrl-C, a full disk)
    # left half a soup under --out, or half of a source when --out named one of them.
    tmp = args.out.with_name(args.out.name + ".tmp")
    try:
        torch.save(soup, tmp)
        os.replace(tmp, args.out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the part written stayed, on the disk that filled up
        raise
    for src in soup["averaged_from"]:
        log.info("%.3f x %s", src["weight"], src["path"])
    log.info("wrote %s (%s)", args.out, soup["variant"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

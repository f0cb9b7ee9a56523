"""`weights/manifest.json`: what each shipped model file is, and the sha256 that proves it.

The format (schema ``sharpcam-manifest/1``) is fixed in docs/ARCHITECTURE.md; `training/`'s
export writes the same JSON with its own code (`training.export.update_manifest`: training never
imports the engine). The engine reads the manifest that sits beside a model file: a listed file
must match its sha256 or it is refused, and so must the ONNX external data files it references
(tensors kept beside the graph, ``onnx.save(..., save_as_external_data=True)``), listed under
the entry's ``external_data``.

    entry = verify_file("weights/student_fast.onnx")   # ManifestEntry, or None when unlisted
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA = "sharpcam-manifest/1"
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20  # hashing stream size: constant memory for models of any size

FORMATS = ("onnx", "torchscript")
_SUFFIX_FORMAT = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".jit": "torchscript",
}


class ModelError(RuntimeError):
    """A model file is missing, unreadable, corrupt or breaks the model contract."""


class ModelIntegrityError(ModelError):
    """A model file listed in its manifest does not match the listed sha256."""


@dataclass
class ExternalData:
    """One ONNX external data file of an entry (`external_data[location]`), the weights a graph
    keeps beside it; ``location`` is the path the graph names, relative to the model's folder."""

    sha256: str
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, location: str, d: Any) -> ExternalData:
        if not isinstance(d, Mapping) or not _is_sha256(d.get("sha256")):
            raise ValueError(f"external data {location!r} has no valid sha256")
        return cls(sha256=str(d["sha256"]).lower(), bytes=int(d.get("bytes", 0)))


def _external_data_from(d: Any) -> dict[str, ExternalData]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise ValueError(f"'external_data' must be an object, got {type(d).__name__}")
    return {str(loc): ExternalData.from_dict(str(loc), v) for loc, v in d.items()}


@dataclass
class TensorSpec:
    """One side of the model contract as the manifest states it (`input` or `output`)."""

    name: str = "input"
    dtype: str = "float32"  # float32 | float16
    layout: str = "NCHW"
    color: str = "RGB"
    range: tuple[float, float] = (0, 1)
    min_size: int | None = None  # input only: smallest H and W the model accepts
    multiple: int | None = None  # input only: the model pads internally to this multiple

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "layout": self.layout,
            "color": self.color,
            "range": list(self.range),
        }
        if self.min_size is not None:
            d["min_size"] = self.min_size
        if self.multiple is not None:
            d["multiple"] = self.multiple
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        rng = d.get("range", (0, 1))
        return cls(
            name=str(d.get("name", "input")),
            dtype=str(d.get("dtype", "float32")),
            layout=str(d.get("layout", "NCHW")),
            color=str(d.get("color", "RGB")),
            range=(rng[0], rng[1]),
            min_size=_optional_int(d.get("min_size")),
            multiple=_optional_int(d.get("multiple")),
        )


def _optional_int(value: Any) -> int | None:
    # Checked here, where a bad value is a malformed entry naming the manifest, rather than
    # as a bare int() error when a reduced --scale first rounds a frame size to the multiple.
    return None if value is None else int(value)


def _format_from(file: str, d: Mapping[str, Any]) -> str:
    """An entry's ``format``, one of :data:`FORMATS` (by the file's suffix where not given).

    Any other value was taken as is: ``"ONNX"`` skipped the check of the file's external
    weights (done for ``"onnx"`` only), and tampered weights loaded as verified.
    """
    fmt = d.get("format", _SUFFIX_FORMAT.get(Path(file).suffix.lower(), "onnx"))
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


@dataclass
class ManifestEntry:
    """One file of `manifest.json["files"]`; `file` is its name inside the weights folder."""

    file: str
    sha256: str
    bytes: int = 0
    format: str = "onnx"  # onnx | torchscript
    precision: str = "fp32"  # fp32 | fp16
    variant: str = ""  # student registry name
    device: str = "cpu"  # what it is meant for: cpu | gpu
    input: TensorSpec = field(default_factory=lambda: TensorSpec("input", min_size=16))
    output: TensorSpec = field(default_factory=lambda: TensorSpec("output"))
    params: int | None = None
    macs_per_pixel: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    config_digest: str | None = None
    # ONNX external data files the graph references (location -> digest); written only when
    # there are some, so entries of self-contained files keep the keys they always had.
    external_data: dict[str, ExternalData] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept on a round trip

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sha256": self.sha256,
            "bytes": self.bytes,
            "format": self.format,
            "precision": self.precision,
            "variant": self.variant,
            "device": self.device,
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "params": self.params,
            "macs_per_pixel": self.macs_per_pixel,
            "metrics": self.metrics,
            "config_digest": self.config_digest,
        }
        if self.external_data:
            d["external_data"] = {loc: x.to_dict() for loc, x in self.external_data.items()}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, file: str, d: Mapping[str, Any]) -> ManifestEntry:
        known = {f for f in cls.__dataclass_fields__ if f not in ("file", "extra")}
        return cls(
            file=file,
            sha256=str(d["sha256"]).lower(),
            bytes=int(d.get("bytes", 0)),
            format=_format_from(file, d),
            precision=str(d.get("precision", "fp32")),
            variant=str(d.get("variant", "")),
            device=str(d.get("device", "cpu")),
            input=TensorSpec.from_dict(d.get("input", {"name": "input"})),
            output=TensorSpec.from_dict(d.get("output", {"name": "output"})),
            params=d.get("params"),
            macs_per_pixel=d.get("macs_per_pixel"),
            metrics=dict(d.get("metrics") or {}),
            config_digest=d.get("config_digest"),
            external_data=_external_data_from(d.get("external_data")),
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass
class Manifest:
    """A parsed `manifest.json`; `path` is where it was read from (None when built in memory)."""

    files: dict[str, ManifestEntry] = field(default_factory=dict)
    schema: str = SCHEMA
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "files": {n: e.to_dict() for n, e in self.files.items()}}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_sha256(s: Any) -> bool:
    return isinstance(s, str) and len(s) == 64 and all(c in "0123456789abcdefABCDEF" for c in s)


def load_manifest(directory: str | Path) -> Manifest | None:
    """Read `directory/manifest.json`; None when there is none.

    Raises:
        ModelError: the manifest exists but is not valid JSON or not schema
            ``sharpcam-manifest/1`` (the message names the file and the reason).
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        # utf-8-sig: a manifest saved by a Windows editor starts with a byte-order mark, and
        # every model it lists was refused ("Unexpected UTF-8 BOM").
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read manifest {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        got = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise ModelError(f"manifest {path}: expected schema {SCHEMA!r}, got {got!r}")
    files = raw.get("files")
    if not isinstance(files, dict):
        raise ModelError(f"manifest {path}: 'files' must be an object")
    entries: dict[str, ManifestEntry] = {}
    for name, d in files.items():
        if not isinstance(d, dict) or not _is_sha256(d.get("sha256")):
            raise ModelError(f"manifest {path}: entry {name!r} has no valid sha256")
        try:
            entries[name] = ManifestEntry.from_dict(name, d)
        # AttributeError: "input" or "output" that is not an object (null, a list).
        # OverflowError: a "bytes" of Infinity (json reads it), which int() cannot take.
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise ModelError(f"manifest {path}: entry {name!r} is malformed: {exc}") from exc
    return Manifest(files=entries, schema=SCHEMA, path=path)


def verify_file(path: str | Path) -> ManifestEntry | None:
    """Check a model file against the manifest beside it.

    Returns:
        The file's `ManifestEntry` when it is listed and its sha256 matches; None when there is
        no manifest beside it or the file is not listed (the caller decides whether to warn).

    Raises:
        ModelError: the file does not exist, or the manifest is unreadable, or an ONNX
            external data file its entry lists is missing.
        ModelIntegrityError: the file is listed and its sha256 differs; for an OpenVINO IR
            ``.xml``, also when its ``.bin`` is not listed or differs; for an ONNX file, also
            when an external data file it references is not listed in its entry or differs.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        # Unread, the runtimes called it "not an ONNX model (damaged, truncated ...)" or
        # "system error number 13".
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    manifest = load_manifest(path.parent)
    if manifest is None:
        return None
    name = _listed_name(manifest, path)
    if name is None:
        return None
    entry = manifest.files[name]
    _check_sha256(path, entry, manifest)
    if path.suffix.lower() == ".xml":
        _check_ir_weights(path.with_suffix(".bin"), path, manifest)
    elif entry.format == "onnx":
        _check_external_data(path, entry, manifest)
    return entry


def _listed_name(manifest: Manifest, path: Path) -> str | None:
    """The name `manifest` lists the file `path` under; None when it is not listed."""
    if path.name in manifest.files:
        return path.name
    # On a case-insensitive file system (Windows, macOS) `Student_Fast.onnx` opens the
    # listed `student_fast.onnx`: it must not pass as an unlisted file and skip the check.
    same = [k for k in manifest.files if (path.parent / k).is_file() and _same(path, k)]
    return same[0] if same else None


def _check_ir_weights(weights: Path, xml: Path, manifest: Manifest) -> None:
    """OpenVINO IR: the listed ``xml`` is the graph, ``weights`` (the .bin OpenVINO reads beside
    it) hold the weights; a manifest vouching for the graph alone let a damaged or replaced .bin
    load as verified, so the .bin must be listed and match too."""
    listed = _listed_name(manifest, weights)
    if not weights.is_file():
        if listed is not None:
            raise ModelError(f"model weights file not found: {weights}")
        return  # a graph without weights: nothing unverified is loaded
    if listed is None:
        raise ModelIntegrityError(
            f"model file {xml} is listed in {manifest.path} but its weights {weights} are not "
            "listed: list them too, or remove the entry of the .xml to load it unverified"
        )
    _check_sha256(weights, manifest.files[listed], manifest)


def _check_external_data(path: Path, entry: ManifestEntry, manifest: Manifest) -> None:
    """ONNX external data: ONNX Runtime reads the tensors a graph marks EXTERNAL from files beside
    it, which the graph's sha256 does not cover; a damaged or swapped one loaded as verified.
    Each file the entry lists must match, and each file the graph references must be listed
    (an entry written before `external_data` existed, or by hand, vouches for the graph only)."""
    for location in onnx_external_data(path):
        _external_path(path, location, f"model file {path} names")
        if location not in entry.external_data:
            raise ModelIntegrityError(
                f"model file {path} keeps tensors in the external data file "
                f"{path.parent / location}, which its entry in {manifest.path} does not list: "
                "re-export it, or list the file under the entry's 'external_data' "
                "(engine.manifest.make_entry does), or remove the entry to load it unverified"
            )
    for location, listed in entry.external_data.items():
        side = _external_path(path, location, f"{manifest.path} lists for {path}")
        if not side.is_file():
            raise ModelError(
                f"external data file not found: {side} (listed for {path} in {manifest.path})"
            )
        actual = sha256_file(side)
        if actual != listed.sha256:
            raise ModelIntegrityError(
                f"external data file {side} of model {path} does not match {manifest.path}: "
                f"expected sha256 {listed.sha256}, got {actual} "
                "(the file is damaged or was replaced; re-download or re-export the model)"
            )


def _check_sha256(path: Path, entry: ManifestEntry, manifest: Manifest) -> None:
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ModelIntegrityError(
            f"model file {path} does not match {manifest.path}: "
            f"expected sha256 {entry.sha256}, got {actual} "
            "(the file is damaged or was replaced; re-download or re-export it)"
        )


def _same(path: Path, listed: str) -> bool:
    try:
        return os.path.samefile(path, path.parent / listed)
    except OSError:
        return False


def make_entry(path: str | Path, **fields: Any) -> ManifestEntry:
    """A `ManifestEntry` for an existing file: sha256, size and format filled in from the file,
    and for an ONNX file the sha256 of each external data file its graph references.

    `fields` override any attribute (`input`/`output` may be `TensorSpec`s or dicts).

    Raises:
        ModelError: an external data file the graph references does not exist.
    """
    path = Path(path)
    for side in ("input", "output"):
        if isinstance(fields.get(side), Mapping):
            fields[side] = TensorSpec.from_dict(fields[side])
    base: dict[str, Any] = {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "format": _SUFFIX_FORMAT.get(path.suffix.lower(), "onnx"),
    }
    base.update(fields)
    if base["format"] == "onnx" and path.suffix.lower() != ".xml" and "external_data" not in fields:
        base["external_data"] = _external_data_of(path)
    return ManifestEntry(file=path.name, **base)


def _external_data_of(path: Path) -> dict[str, ExternalData]:
    """The digest of each external data file the ONNX graph at ``path`` references."""
    out: dict[str, ExternalData] = {}
    for location in onnx_external_data(path):
        side = _external_path(path, location, f"model file {path} names")
        if not side.is_file():
            raise ModelError(f"external data file not found: {side} (referenced by {path})")
        out[location] = ExternalData(sha256=sha256_file(side), bytes=side.stat().st_size)
    return out


def _external_path(model: Path, location: str, who: str) -> Path:
    """``model``'s folder / ``location``, or ModelError when that is outside the folder.

    ONNX Runtime refuses such a model ("External data path escapes model directory"): an
    absolute location, one climbing out with ``..``, or a link that resolves elsewhere. Hashed
    here, ``"/etc/passwd"`` or ``"../../x"`` read any file of the machine as the model's weights
    (a large one for minutes) and printed its sha256 in the mismatch message. The export checks
    the same rule with its own copy (``training.export._external_path``).
    """
    folder = model.parent
    side = folder / location
    try:
        inside = side.resolve().is_relative_to(folder.resolve())  # links followed, as ORT does
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL in the name: no file
        inside = False
    if not location or Path(location).anchor or not inside:
        raise ModelError(
            f"{who} the external data file {location!r}, which is not a path inside the model's "
            f"folder {folder}: ONNX Runtime refuses such a model, and SharpCam reads no file "
            "outside it"
        )
    return side


# --------------------------------------------------------------------------------------------
# ONNX external data, read from the protobuf wire format: the engine does not depend on the
# `onnx` package (onnxruntime alone runs the models), and only a few fields matter here.
# --------------------------------------------------------------------------------------------

# Fields (numbers from onnx.proto) on every path from ModelProto to a TensorProto, the message
# kind each holds; `onnx.external_data_helper` moves tensors of all of these out of the graph.
_ONNX_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},  # TrainingInfoProto: initialization, algorithm
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # node, initializer, sparse_initializer
    "function": {7: "node", 11: "attribute"},  # node, attribute_proto (default values)
    "node": {5: "attribute"},
    # t, g, tensors, graphs, sparse_tensor, sparse_tensors (If/Loop bodies, Constant values)
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},  # values, indices
}
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data: repeated StringStringEntryProto
_TENSOR_DATA_LOCATION = 14  # TensorProto.data_location: 1 = EXTERNAL
_EXTERNAL = 1
# Messages nested deeper than this below the ModelProto: protobuf's parsers stop at 100 levels
# (ONNX Runtime says "Protobuf parsing failed", onnx.load "Exceeded ... depth"), so no model
# that loads is deeper; a file that is, is not read on (the reader's memory grows with depth).
_MAX_NESTING = 100
# The longest location read: a path longer than PATH_MAX (4096 on Linux) opens nowhere, and a
# string field of a hostile file may claim the whole file (a copy of gigabytes).
_MAX_LOCATION = 4096


class _WireError(ValueError):
    """Bytes that are not a protobuf message."""


class _FileShrank(Exception):
    """The model file came back shorter than it was when opened: it is being rewritten."""


# Bytes read at a time: the reader's whole buffer, whatever the file's size.
_BLOCK = 1 << 16

# A message is a span (start, end) of the file's bytes: offsets rather than slices, so nothing
# is copied until a field that matters is read.
_Span = tuple[int, int]


class _FileBytes:
    """The first ``size`` bytes of an open file, read on demand in blocks of `_BLOCK`.

    Not a memory map: a mapped file truncated or rewritten in place (an export or a copy over
    it while the app verifies it) raises SIGBUS on the next access, which kills the process
    rather than raising. A read past the new end just comes back short (`_FileShrank`).
    """

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size
        self._start = 0
        self._block = b""

    def byte(self, pos: int) -> int:
        i = pos - self._start
        if not 0 <= i < len(self._block):
            # The walk moves forward (a parent resumes past its child): one block at a time.
            self._block = self.read(pos, min(pos + _BLOCK, self.size))
            self._start, i = pos, 0
        return self._block[i]

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``start:end``; callers bound the length (`_MAX_LOCATION`, a key's, `_BLOCK`)."""
        self._f.seek(start)
        data = self._f.read(end - start)
        if len(data) != end - start:
            raise _FileShrank(f"{len(data)} of {end - start} bytes at offset {start}")
        return data


def _varint(buf: _FileBytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError("truncated or overlong varint")
        byte = buf.byte(pos)
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _value(
    buf: _FileBytes, pos: int, end: int, number: int, wire: int, depth: int = 0
) -> tuple[int | _Span | None, int]:
    """The value of field ``number`` whose key ended at ``pos`` and the position after it: an int
    for a varint, a span for a length-delimited field, None for a skipped fixed-size field or
    group."""
    if wire == 0:
        return _varint(buf, pos, end)
    if wire == 1:
        return None, pos + 8
    if wire == 2:
        size, pos = _varint(buf, pos, end)
        return (pos, pos + size), pos + size
    if wire == 5:
        return None, pos + 4
    if wire == 3:
        # A group (proto2): ONNX defines none, but every protobuf parser skips an unknown one,
        # and so do the runtimes. Refused here, it read as "no external data", and a graph
        # with one loaded its swapped weights file as verified.
        return None, _skip_group(buf, pos, end, number, depth + 1)
    raise _WireError(f"wire type {wire}")


def _skip_group(buf: _FileBytes, pos: int, end: int, number: int, depth: int) -> int:
    """The position after the group ``number`` whose fields start at ``pos`` (its end tag read)."""
    if depth > _MAX_NESTING:
        raise _WireError(f"groups nested deeper than {_MAX_NESTING}")
    while pos < end:
        key, pos = _varint(buf, pos, end)
        inner, wire = key >> 3, key & 7
        if wire == 4:
            if inner != number:
                raise _WireError(f"group {inner} ended inside group {number}")
            return pos
        _, pos = _value(buf, pos, end, inner, wire, depth)
    raise _WireError(f"group {number} runs past the end of its message")


def _fields(buf: _FileBytes, span: _Span) -> Iterable[tuple[int, int | _Span]]:
    """``(field number, value)`` of each field of the message at ``span``: an int for a varint,
    a span for a length-delimited field; fixed-size fields and groups are skipped."""
    pos, end = span
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError("field number 0")
        value, pos = _value(buf, pos, end, number, wire)
        if pos > end:
            raise _WireError("field runs past the end of its message")
        if value is not None:
            yield number, value


def _tensor_location(buf: _FileBytes, span: _Span) -> str | None:
    """The ``location`` of a TensorProto whose data is EXTERNAL; None for data kept inline
    (ONNX Runtime reads ``external_data`` only when ``data_location`` says EXTERNAL)."""
    external = False
    location = None
    for number, value in _fields(buf, span):
        if number == _TENSOR_DATA_LOCATION and isinstance(value, int):
            external = value == _EXTERNAL
        elif number == _TENSOR_EXTERNAL_DATA and isinstance(value, tuple):
            # StringStringEntryProto: key = 1, value = 2. Spans, not slices: only a key the
            # length of b"location" and a value up to _MAX_LOCATION are ever read.
            entry = {n: v for n, v in _fields(buf, value) if n in (1, 2) and isinstance(v, tuple)}
            key = entry.get(1, (0, 0))
            if key[1] - key[0] == len(b"location") and buf.read(*key) == b"location":
                start, end = entry.get(2, (0, 0))
                if end - start > _MAX_LOCATION:
                    raise _WireError("external data location longer than any path")
                # The bytes as the runtime opens them (ONNX is proto2: strings are not checked
                # to be UTF-8); a strict decode failed, which read as "no external data".
                location = os.fsdecode(buf.read(start, end))
    return location if external else None


def _external_locations(buf: _FileBytes) -> list[str]:
    """Every external data location the serialized ModelProto in ``buf`` references, once."""
    found: dict[str, None] = {}
    # Depth first, one field iterator per open message: memory follows the nesting (bounded by
    # _MAX_NESTING), not the number of fields. A list of every child's span to visit took some
    # 90 bytes per byte of a file of empty nodes (880 MiB for 10 MB, a 2 GiB one: the machine's).
    stack: list[tuple[dict[int, str], Iterator[tuple[int, int | _Span]]]] = [
        (_ONNX_CHILDREN["model"], iter(_fields(buf, (0, buf.size))))
    ]
    while stack:
        children, fields = stack[-1]
        for number, value in fields:
            kind = children.get(number)
            if kind is None or not isinstance(value, tuple):
                continue
            if kind == "tensor":
                location = _tensor_location(buf, value)
                if location is not None:
                    found.setdefault(location)
                continue
            if len(stack) > _MAX_NESTING:
                raise _WireError(f"messages nested deeper than {_MAX_NESTING}")
            stack.append((_ONNX_CHILDREN[kind], iter(_fields(buf, value))))
            break  # into the child; this message's iterator goes on where it stopped
        else:
            stack.pop()  # every field of this message read
    return list(found)


def onnx_external_data(path: str | Path) -> list[str]:
    """The external data files (locations relative to the model's folder, as the graph names
    them) that the ONNX model at ``path`` keeps tensors in; empty for a self-contained model,
    and for a file that is not an ONNX protobuf at all (the runtime refuses that one itself).

    Reads the file in blocks of `_BLOCK` bytes (a self-contained model can be up to 2 GiB), and
    only the few bytes of each message header: a tensor's data is skipped, not read.

    Raises:
        ModelError: the file cannot be read, or it shrank while it was read (rewritten in place:
            what was read is no model, and its external data cannot be told).
    """
    try:
        with open(path, "rb") as f:
            buf = _FileBytes(f, os.fstat(f.fileno()).st_size)
            try:
                return _external_locations(buf)
            except _WireError:
                return []
    except _FileShrank as exc:
        # Not "no external data": that would pass a model half-replaced by another one, whose
        # side files then load unchecked.
        raise ModelError(
            f"model file {path} changed while it was read: it is now shorter than the "
            f"{buf.size} bytes it had ({exc}); it is being rewritten, try again once that is done"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc


def write_manifest(
    directory: str | Path,
    entries: Iterable[ManifestEntry] | Mapping[str, ManifestEntry],
    *,
    merge: bool = False,
) -> Path:
    """Write `directory/manifest.json` atomically and return its path.

    Args:
        entries: the files to list (a mapping's keys are ignored: each entry's `file` names it).
        merge: keep entries already in the manifest that `entries` does not replace.
    """
    directory = Path(directory)
    if isinstance(entries, Mapping):
        entries = entries.values()
    manifest = (load_manifest(directory) if merge else None) or Manifest()
    for e in entries:
        manifest.files[e.file] = e
    path = directory / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    # Atomic replace: a reader never sees a half-written manifest (it would refuse the models).
    os.replace(tmp, path)
    return path

"""What the window remembers between runs, stored with ``QSettings``.

One dataclass holds every remembered choice; ``load_settings``/``save_settings`` move it in and
out of a ``QSettings`` store. The default store is the platform's native one under
organisation "SharpCam", application "SharpCam". Tests (and ``run_app(settings_path=...)``)
pass an ``.ini`` path instead so they never touch a person's real settings.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from engine.backends import BackendError, list_backends, parse_scale

ORGANIZATION = "SharpCam"
APPLICATION = "SharpCam"
# An .ini path here redirects the store, e.g. for tests or a portable install.
SETTINGS_ENV = "SHARPCAM_SETTINGS"


@dataclass
class AppSettings:
    # camera id ("0", "/dev/video0", a device path or name, which may hold commas) or "demo";
    # "" = first camera, else demo
    source: str = ""
    resolution: str = "1280x720"  # requested capture size, WxH
    fps: int = 30  # requested capture rate
    backend: str = "auto"  # engine backend name
    enabled: bool = True  # sharpening on (off = passthrough, for instant A/B)
    strength: float = 1.0  # blend of input and output, [0, 1]
    scale: str = "auto"  # processing scale: "auto" or a number in (0, 1] ("0.75")
    denoise: bool = False  # reduce a dim camera's noise over time (engine.denoise)
    view_mode: str = "split"  # "split" (draggable before/after) | "side" (side by side) | "after"
    split: float = 0.5  # position of the before/after divider, fraction of the width
    mirror: bool = True  # mirror the preview only; the virtual camera is never mirrored
    virtual_camera: bool = False  # start the virtual camera with the app
    geometry: bytes = b""  # QMainWindow.saveGeometry()

    @property
    def size(self) -> tuple[int, int]:
        """``resolution`` as ``(width, height)``."""
        w, h = (int(v) for v in self.resolution.lower().split("x"))
        return w, h


def format_scale(scale: float | str) -> str:
    """The stored form of a processing scale: ``"auto"`` or the shortest number (``"0.75"``)."""
    return scale if isinstance(scale, str) else f"{scale:g}"


def open_store(path: str | None = None) -> QSettings:
    """The settings store: an ``.ini`` file at ``path`` (or ``$SHARPCAM_SETTINGS``), else native."""
    path = path or os.environ.get(SETTINGS_ENV)
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(
        QSettings.Format.NativeFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION
    )


def load_settings(store: QSettings) -> AppSettings:
    """Read every field, falling back to its default when missing or unreadable."""
    out = AppSettings()
    for f in fields(AppSettings):
        default = getattr(out, f.name)
        raw = store.value(f.name, None)
        if raw is None:
            continue
        if isinstance(default, str) and isinstance(raw, list):
            raw = _whole_string(store, f.name, raw)
        try:
            setattr(out, f.name, _coerce(raw, default))
        except (TypeError, ValueError):
            # A hand-edited or older store must never stop the app from starting.
            continue
    out.strength = min(max(out.strength, 0.0), 1.0)
    out.split = min(max(out.split, 0.0), 1.0)
    if out.view_mode not in ("split", "side", "after"):
        out.view_mode = "split"
    if out.backend not in ("auto", *list_backends()):
        # A hand-edited name ("cuda") failed to load and left the video unsharpened, under
        # advice about the GPU driver; so did one whose runtime is not installed here (a
        # settings file from a machine with OpenVINO), and no control in the window picks
        # another. `auto` sharpens with what there is.
        out.backend = AppSettings.backend
    try:
        out.scale = format_scale(parse_scale(out.scale))
    except BackendError:
        out.scale = AppSettings.scale
    try:
        # As the resolution picker spells its entries: "1920X1080" matched none of them.
        out.resolution = "{}x{}".format(*out.size)
    except ValueError:
        out.resolution = AppSettings.resolution
    return out


def save_settings(
    store: QSettings, settings: AppSettings, *, changed_from: AppSettings | None = None
) -> bool:
    """Write every field to ``store``'s location and flush to disk; False when that failed (a
    folder that cannot be written, a full disk). Never raises for that.

    With ``changed_from`` (the values this window read or last saved), only the fields that
    differ from it are written, and those the store lacks: another SharpCam running at the
    same time keeps what was changed there (every field written undid it, the last window
    closed winning them all)."""
    # Through a new handle on the same location (the process shares its cache with ``store``):
    # a QSettings keeps the first error it met for good, and every later save through it would
    # be reported failed, also once the disk has room again.
    if store.organizationName():
        # Built as ``store`` was, not on its file: macOS keeps a store named by organisation and
        # application in its preferences daemon, which a write to the .plist file bypasses (the
        # next launch reads the daemon's copy, without the change).
        out = QSettings(
            store.format(), store.scope(), store.organizationName(), store.applicationName()
        )
    else:
        out = QSettings(store.fileName(), store.format())
    before = asdict(changed_from) if changed_from is not None else {}
    for name, value in asdict(settings).items():
        if name in before and before[name] == value and out.contains(name):
            continue  # not changed here: what the store holds now stays (QSettings merges)
        out.setValue(name, QByteArray(value) if isinstance(value, bytes) else value)
    out.sync()
    return out.status() == QSettings.Status.NoError


def unsaved_reason(store: QSettings) -> str:
    """Why a save to ``store`` failed, in the OS's words ("Read-only file system", "Not a
    directory: /home/me/notes" for a file where a folder should be), or "" when that cannot be
    told. QSettings keeps the reason to itself (its status says only "access error"), so the
    save is retried here the way it writes: a file beside the store's. Only for a store that
    is a file (INI, and the native store on Linux and the BSDs)."""
    native_file = not sys.platform.startswith(("win", "darwin"))
    if store.format() != QSettings.Format.IniFormat and not native_file:
        return ""  # the registry, or macOS's preferences daemon
    path = Path(store.fileName())
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        # A file where a folder of the path should be: mkdir would say "File exists" of it.
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        # A few blocks, as a save writes: a full disk refuses those, not an empty file.
        with tempfile.TemporaryFile(dir=path.parent) as probe:
            probe.write(b"\0" * 8192)
            probe.flush()
            os.fsync(probe.fileno())
    except NotADirectoryError as exc:
        return f"{exc.strerror}: {exc.filename}"  # which file stands in the way
    except OSError as exc:
        return exc.strerror or str(exc)  # the probe's own name would only puzzle
    return ""


def _whole_string(store: QSettings, key: str, parts: list[object]) -> str:
    """The string a person wrote for ``key`` that QSettings read back as a list.

    QSettings writes a string holding a comma in quotes (``source="/home/me/a,b/clip.mp4"``),
    but reads an unquoted one (a hand-edited or portable ``.ini``, a file another program wrote)
    as a list split at the commas, with the spaces around each comma dropped. The text as
    written is taken from the file when it is plain (no quotes, escapes or ``;`` comment, which
    QSettings would have read otherwise) and splits into exactly ``parts``; else the parts are
    joined with bare commas, which is exact for the usual paths (``a,b``, not ``a, b``).
    """
    joined = ",".join(str(p) for p in parts)
    text = _ini_text(store, key)
    if text is None or set(text) & set('"\\;'):
        return joined
    if [p.strip() for p in text.split(",")] != [str(p) for p in parts]:
        return joined  # not the line QSettings read (changed since, or another section's)
    return text


def _ini_text(store: QSettings, key: str) -> str | None:
    """The text after ``key=`` at the top level (section ``[General]``) of ``store``'s INI file,
    stripped as QSettings strips it; None without an INI file or such a line (the native stores
    of macOS and Windows are not text, and keep strings whole anyway)."""
    if store.format() not in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        return None
    try:
        lines = Path(store.fileName()).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    section = "General"  # keys above the first [section] are top-level keys too
    text = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif section == "General" and "=" in stripped:
            name, _, value = stripped.partition("=")
            if name.strip() == key:
                text = value.strip()  # the last one wins, as in QSettings
    return text


def _coerce(raw: object, default: object) -> object:
    # INI stores everything as strings; the native stores may keep types. Normalise both.
    if isinstance(default, bool):
        if isinstance(raw, str):
            word = raw.strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off"):
                return False
            # Any other word read as False: a damaged `enabled` turned sharpening off, looking
            # like the person's choice. Unreadable means the default, as for every other field.
            raise ValueError(f"not a yes/no value: {raw!r}")
        if not isinstance(raw, (bool, int)):
            # "a,b" comes back from an INI store as a list, which bool() read as True.
            raise ValueError(f"not a yes/no value: {raw!r}")
        return bool(raw)
    if isinstance(default, int):
        return int(raw)  # type: ignore[arg-type]
    if isinstance(default, float):
        value = float(raw)  # type: ignore[arg-type]
        if not math.isfinite(value):
            # "nan" parses, survives clamping (comparisons with NaN are all False) and crashes
            # the window at round(strength * 100).
            raise ValueError(f"not a finite number: {raw!r}")
        return value
    if isinstance(default, bytes):
        return bytes(raw.data()) if isinstance(raw, QByteArray) else bytes(raw)  # type: ignore[arg-type]
    if isinstance(raw, (list, tuple)):
        # A list where a string belongs (a native store edited by hand): its parts, not the
        # Python repr "['a', 'b']" that str() makes of it.
        return ",".join(str(p) for p in raw)
    return str(raw)

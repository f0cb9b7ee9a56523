"""The window's "Save sharpened copy": names, the child ``process`` it runs, progress, stop,
failure, and the window around it (enabled for files only, the banner, closing while saving).

The child is the real ``python main.py process`` (with ``--backend unsharp``: the tests are
about the saving, not the model); waits are on signals, never fixed sleeps.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app import save as save_mod
from app.camera_list import CameraChoice, demo_choice
from app.engine_bridge import UserMessage
from app.save import (
    MAIN_SCRIPT,
    SaveJob,
    SaveResult,
    default_output,
    describe_result,
    save_command,
    save_filter,
    saved_folder,
)
from app.window import SAVE_TIP, SAVE_UNOPENED_TIP
from tests.test_cli import processes_naming, read_video, slow_to_finish_ffmpeg, write_video

pytestmark = pytest.mark.timeout(120)

# Under the name pytest gives it (tests/ is no package): imported as `tests.test_app`, it was a
# second copy whose import registered its own recording virtual camera over test_app's, and
# every virtual-camera test of test_app collected before this file recorded nothing.
import test_app  # noqa: E402

#: The window fixture of test_app (a window on the real engine, closed at teardown).
make_window = test_app.make_window
JOB_TIMEOUT_MS = 60_000  # a child Python that imports the engine on a busy 2-core CI box


@pytest.fixture(autouse=True)
def _no_modal_questions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window closed at teardown with a save still running (a test that failed midway)
    asks whether to stop it: answered Yes, where a real modal box would hang the run."""
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)


def finished(qtbot, job: SaveJob) -> SaveResult:  # noqa: ANN001
    """Wait for ``job`` to end; its result."""
    if job.result is None:
        with qtbot.waitSignal(job.finished, timeout=JOB_TIMEOUT_MS):
            pass
    assert job.result is not None
    return job.result


#: Frames of :func:`long_clip`: some 5 s of `process --backend unsharp` on a 2-core machine,
#: where a stop comes within a fraction of one (3000 left under a second of margin).
LONG_FRAMES = 12_000


def long_clip(path: Path, frames: int = LONG_FRAMES) -> Path:
    """A clip long enough that a stop comes before its end (small frames: quick to write)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (96, 64))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    for i in range(frames):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def long_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One :func:`long_clip` for the module (written once: 2 s)."""
    return long_clip(tmp_path_factory.mktemp("long") / "long.avi")


def saving_long_clip(qtbot, window, clip: Path, tmp_path: Path, ext: str = ".avi") -> SaveJob:  # noqa: ANN001
    """The window saving a copy of ``clip`` (:func:`long_clip`) to ``long.sharp{ext}``, its
    first frames done (a stop now comes before its end)."""
    job = window.save_copy(str(tmp_path / f"long.sharp{ext}"), source=str(clip))
    qtbot.waitUntil(lambda: job.done > 0, timeout=JOB_TIMEOUT_MS)
    return job


# --------------------------------------------------------------------------- names and command


def test_the_proposed_name_keeps_a_written_format_and_is_not_taken(tmp_path: Path) -> None:
    clip = tmp_path / "talk.mov"
    clip.write_bytes(b"")
    assert default_output(str(clip)) == str(tmp_path / "talk.sharp.mov")
    (tmp_path / "talk.sharp.mov").write_bytes(b"")
    assert default_output(str(clip)) == str(tmp_path / "talk.sharp-2.mov")
    # A container SharpCam does not write becomes an MP4.
    webm = tmp_path / "screen.webm"
    webm.write_bytes(b"")
    assert default_output(str(webm)) == str(tmp_path / "screen.sharp.mp4")


def test_the_proposed_name_of_a_photo_is_one_its_format_is_written_as(tmp_path: Path) -> None:
    photo = tmp_path / "IMG_0001.JPG"
    cv2.imwrite(str(photo), np.full((8, 8, 3), 90, np.uint8))
    assert default_output(str(photo)) == str(tmp_path / "IMG_0001.sharp.jpg")
    heic = tmp_path / "IMG_0002.HEIC"
    heic.write_bytes(b"")  # a name is enough: HEIF is read, never written
    assert default_output(str(heic)) == str(tmp_path / "IMG_0002.sharp.jpg")
    assert "*.png" in save_filter(str(photo)) and "*.heic" not in save_filter(str(photo))
    assert "*.mp4" in save_filter(str(tmp_path / "a.mov"))
    # Read but not written (PBM is 1-bit, EXR float): a lossless PNG, not a lossy JPEG.
    for name in ("scan.pbm", "render.exr"):
        (tmp_path / name).write_bytes(b"")
        assert default_output(str(tmp_path / name)) == str(tmp_path / (name[:-4] + ".sharp.png"))


def test_a_folder_s_copy_is_a_folder_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "holiday"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((8, 8, 3), 90, np.uint8))
    assert default_output(str(folder)) == str(tmp_path / "holiday.sharp")
    assert (
        save_command(str(folder), str(tmp_path / "holiday.sharp"))[3]
        == str(tmp_path / "holiday.sharp") + os.sep
    )


def test_a_file_in_a_folder_that_cannot_be_written_is_copied_to_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bundled clip of a read-only install: its own folder cannot take the copy.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(save_mod.os, "access", lambda p, mode: Path(p) != ro)
    assert default_output(str(ro / "demo.mp4")) == str(home / "demo.sharp.mp4")


def test_the_command_is_process_below_normal_priority_with_lines_and_a_stop_on_eof() -> None:
    args = save_command("in.mp4", "out.mp4", backend="onnx", model="m.onnx", strength=0.75)
    assert Path(args[0]) == MAIN_SCRIPT and MAIN_SCRIPT.is_file()
    assert args[1:4] == ["process", "in.mp4", "out.mp4"]
    for pair in (["--backend", "onnx"], ["--strength", "0.75"]):
        i = args.index(pair[0])
        assert args[i : i + 2] == pair
    # As `process` reads it, also a relative model file whose name starts with a dash.
    import main as cli

    parsed = cli.build_parser().parse_args(save_command("in.mp4", "o.mp4", model="-m.onnx")[1:])
    assert (parsed.input, parsed.output, parsed.model) == ("in.mp4", "o.mp4", "-m.onnx")
    assert {"--low-priority", "--stop-on-eof"} <= set(args)
    assert args[args.index("--progress") + 1] == "lines"
    assert "--model" not in save_command("in.mp4", "out.mp4")
    # The window's noise switch goes with the copy: it is what the live picture showed.
    assert "--denoise" not in save_command("in.mp4", "out.mp4")
    assert "--denoise" in save_command("in.mp4", "out.mp4", denoise=True)
    # Not for a photo: `process` would say in command-line words that it does not apply.
    assert "--denoise" not in save_command("in.png", "out.png", denoise=True)


def test_the_banner_words_follow_how_the_save_ended() -> None:
    ok = SaveResult("o.mp4", 0, said=["in -> o · x", "note: kept", "24 frames -> o.mp4"])
    assert describe_result(ok) == (
        "saved",
        "Sharpened copy saved",
        "kept\n24 frames written to o.mp4",
    )
    # Saved, but without something of the input: a warning, not the all-clear.
    no_sound = SaveResult(
        "o.mp4",
        0,
        said=["in -> o", "warning: o.mp4 has no sound: ffmpeg: gone", "24 frames -> o.mp4"],
    )
    assert describe_result(no_sound) == (
        "save_warning",
        "Sharpened copy saved without its sound",
        "o.mp4 has no sound: ffmpeg: gone\n24 frames written to o.mp4",
    )
    short = SaveResult("o.mp4", 0, said=["in -> o", "warning: in announced 9", "8 frames -> o.mp4"])
    assert describe_result(short)[:2] == (
        "save_warning",
        "Sharpened copy saved with a problem (below)",
    )
    # A file that gave no frame count: "of ?" is the command line's.
    unknown = SaveResult("o.mkv", 130, True, ["interrupted: 381 of ? frames written to o.i.mkv"])
    assert describe_result(unknown)[2] == "interrupted: 381 frames written to o.i.mkv"
    one = SaveResult("o.png", 0, said=["in -> o", "1 frame -> o.png"])
    assert describe_result(one)[2] == "1 frame written to o.png"
    stopped = SaveResult(
        "o.mp4", 130, True, ["in -> o", "interrupted: 5 of 24 frames written to o.incomplete.mp4"]
    )
    assert describe_result(stopped) == (
        "save_warning",
        "Saving stopped",
        "interrupted: 5 of 24 frames written to o.incomplete.mp4",
    )
    failed = SaveResult(
        "o.txt", 2, said=["warning: m.onnx: unverified", "error: output o.txt must be a video file"]
    )
    assert describe_result(failed) == (
        "save_failed",
        "Saving failed",
        "m.onnx: unverified\noutput o.txt must be a video file",
    )
    crashed = SaveResult("o.mp4", None, said=[f"line {i}" for i in range(10)], left=["/t/.o.p.mp4"])
    kind, head, text = describe_result(crashed)
    assert kind == "save_failed" and "unexpectedly" in head
    assert text.splitlines()[:-1] == [f"line {i}" for i in range(4, 10)]
    assert "hidden file /t/.o.p.mp4" in text.splitlines()[-1]
    # The window has no --overwrite: the command line's advice is left out.
    taken = SaveResult(
        "out",
        2,
        said=[
            "error: folder out already holds a.png, which this run would replace with its "
            "results; give a new output folder, or --overwrite to replace them"
        ],
    )
    assert describe_result(taken)[2].endswith("give a new output folder")
    # ...nor a --denoise: a grainy video saved with the switch off is told the switch's name.
    from main import GRAIN_ADVICE

    grainy = SaveResult(
        "o.mp4",
        0,
        said=["in -> o", f"note: the video is grainy (noise 2.5); {GRAIN_ADVICE}", "9 frames -> o"],
    )
    assert describe_result(grainy) == (
        "saved",
        "Sharpened copy saved",
        'the video is grainy (noise 2.5); turn on "Reduce noise in dim light" and save again '
        "to reduce it\n9 frames written to o",
    )


def test_the_banner_says_once_what_a_file_that_decoded_short_wrote() -> None:
    # `process` ends its warning with "; 29 frames written to OUT" and its last line says it
    # again: the banner read the same sentence twice in a row.
    out = "/v/bad.sharp.mp4"
    short = SaveResult(
        out,
        0,
        said=[
            "video bad.mp4 · 160x120 @ 30 fps -> video bad.sharp.mp4",
            "warning: /v/bad.mp4 announced 30 frames and 29 could be decoded (damaged or "
            f"truncated, or a count the container only estimates); 29 frames written to {out}",
            f"29 frames -> {out}, with the sound of the input",
        ],
    )
    kind, _, details = describe_result(short)
    assert kind == "save_warning"
    assert details.count("29 frames written to") == 1, details
    assert details.splitlines() == [
        "/v/bad.mp4 announced 30 frames and 29 could be decoded (damaged or truncated, or a "
        "count the container only estimates)",
        f"29 frames written to {out}, with the sound of the input",
    ]


def test_a_folder_with_photos_skipped_is_saved_with_a_warning_naming_them() -> None:
    result = SaveResult(
        "out",
        1,
        said=[
            "folder in (4 images) -> out",
            "skipped: cannot read image file in/broken.jpg",
            "error: 1 of 4 images skipped; 3 written to out",
        ],
    )
    kind, head, text = describe_result(result)
    assert (kind, head) == ("save_warning", "Sharpened copies saved, 1 photo skipped")
    assert text == "cannot read image file in/broken.jpg\n1 of 4 images skipped; 3 written to out"
    none_written = SaveResult("out", 1, said=["error: 2 of 2 images skipped; 0 written to out"])
    assert describe_result(none_written)[0] == "save_failed"
    whole = SaveResult("out", 0, said=["folder in (2 images) -> out", "2 images -> out"])
    assert describe_result(whole) == ("saved", "Sharpened copy saved", "2 images written to out")


# --------------------------------------------------------------------------- the child process


def test_a_save_writes_every_frame_and_counts_them_as_it_goes(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    clip = write_video(tmp_path / "c.avi", 24)
    out = tmp_path / "c.sharp.mp4"
    job = SaveJob(str(clip), str(out), backend="unsharp")
    counts: list[tuple[int, int]] = []
    job.progress.connect(lambda done, total: counts.append((done, total)))
    job.start()
    result = finished(qtbot, job)
    assert result.ok, result.said
    assert counts and counts[-1] == (24, 24)
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)
    assert len(read_video(out)) == 24
    assert result.said[-1] == f"24 frames -> {out}"
    assert not job.running()


def test_the_childs_lines_are_read_without_its_name_and_a_count_of_no_total_is_busy(
    tmp_path: Path,
) -> None:
    # The child says "sharpcam: warning: ...": read with its name, nothing matched the
    # warning, and a copy that lost its sound was "Sharpened copy saved"; "frames 280/?" (a
    # file that does not say how many) must count 280 of an unknown total, not of 1.
    out = tmp_path / "c.sharp.mp4"
    job = SaveJob(str(tmp_path / "c.mp4"), str(out), backend="unsharp")
    counts: list[tuple[int, int]] = []
    job.progress.connect(lambda done, total: counts.append((done, total)))
    for line in (
        "frames 280/?",
        "frames 3/10",
        f"sharpcam: warning: {out} has no sound: FFmpeg could not copy it",
        f"12 frames -> {out}",
    ):
        job._take(line)
    assert counts == [(280, 0), (3, 10)]
    said = job._said
    assert said[0] == f"warning: {out} has no sound: FFmpeg could not copy it"
    kind, head, _ = describe_result(SaveResult(str(out), 0, said=said))
    assert (kind, head) == ("save_warning", "Sharpened copy saved without its sound")


def test_a_crashed_save_names_only_the_working_files_of_its_own_run(
    qtbot,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    # An earlier save's hidden file (killed a week ago) is not this run's: named, it sent the
    # user to frames of another day.
    clip = write_video(tmp_path / "c.avi", 4)
    out = tmp_path / "c.sharp.avi"
    job = SaveJob(str(clip), str(out), backend="unsharp")
    job._started = time.time()
    old = tmp_path / ".c.sharp.partial.avi"
    old.write_bytes(b"frames of an earlier run")
    week_ago = job._started - 7 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    assert job._left_behind() == []
    os.utime(old, (job._started, job._started))
    assert job._left_behind() == [str(old)]


def test_a_stopped_save_keeps_its_frames_so_far(qtbot, long_source, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "long.sharp.avi"
    job = SaveJob(str(long_source), str(out), backend="unsharp")
    job.start()
    qtbot.waitUntil(lambda: job.done > 0, timeout=JOB_TIMEOUT_MS)
    job.stop()  # closes the child's standard input: no signal, as on Windows
    result = finished(qtbot, job)
    assert result.code == 130 and result.stopped, result.said
    kept = tmp_path / "long.sharp.incomplete.avi"
    kind, head, text = describe_result(result)
    assert head == "Saving stopped" and str(kept) in text
    n = len(read_video(kept))
    assert 0 < n < LONG_FRAMES
    assert f"{n} of {LONG_FRAMES} frames" in text
    assert not out.exists()


def test_a_save_the_command_refuses_says_why(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    clip = write_video(tmp_path / "c.avi", 4)
    job = SaveJob(str(clip), str(tmp_path / "c.txt"), backend="unsharp")
    job.start()
    result = finished(qtbot, job)
    assert result.code == 2
    _, head, text = describe_result(result)
    assert head == "Saving failed" and "must be a video file" in text
    assert saved_folder(result) == ""  # nothing written: no folder to show
    assert not (tmp_path / "c.txt").exists()


def test_a_python_that_cannot_start_is_said(
    qtbot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    job = SaveJob(str(tmp_path / "c.avi"), str(tmp_path / "o.mp4"))
    job.start()
    result = finished(qtbot, job)
    assert result.code is None
    assert "no-python could not be started" in describe_result(result)[2]


# --------------------------------------------------------------------------- the window


def test_the_window_saves_a_sharpened_copy_of_the_clip_playing(
    qtbot,
    make_window,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    window = make_window()
    assert window.save_button.isEnabled() and window.save_action.isEnabled()
    window.strength_slider.setValue(60)
    out = tmp_path / "demo.sharp.mp4"
    job = window.save_copy(str(out))
    assert job.source == demo_choice().source
    assert "--strength" in job._proc.arguments()
    assert job._proc.arguments()[job._proc.arguments().index("--strength") + 1] == "0.6"
    assert "--denoise" not in job._proc.arguments()  # the switch is off
    # One at a time: the button waits while the copy is made, and the bar shows it.
    assert not window.save_button.isEnabled() and window.save_panel.isVisibleTo(window)
    result = finished(qtbot, job)
    assert result.ok, result.said
    assert window.save_button.isEnabled() and not window.save_panel.isVisibleTo(window)
    assert window.banner.kind == "saved" and window.banner.property("severity") == "info"
    assert "Sharpened copy saved" in window.banner.text.text()
    assert len(read_video(out)) == len(read_video(demo_choice().source))
    assert window.bridge.is_running  # the live video went on
    # "Show folder" opens where the copy is, in the file manager.
    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    assert window.banner.folder_button.isVisibleTo(window)
    window.banner.folder_button.click()
    assert [u.toLocalFile() for u in opened] == [str(tmp_path)]
    # Other messages have no folder to show.
    window.show_message(UserMessage("camera", "Camera problem", "Plug it in"))
    assert not window.banner.folder_button.isVisibleTo(window)
    window.banner.dismiss()
    # A second save: the banner's word on the first goes, and so does the first job.
    # ...with the noise switch on this time: the copy gets what the window shows.
    window.denoise_check.setChecked(True)
    with qtbot.waitSignal(job.destroyed, timeout=5000):
        second = window.save_copy(str(tmp_path / "again.mp4"))
    assert "--denoise" in second._proc.arguments()
    assert window.banner.kind == ""  # nothing else was said
    assert finished(qtbot, second).ok


def test_save_is_offered_for_files_only(qtbot, make_window) -> None:  # noqa: ANN001
    window = make_window(start=False, cameras=[CameraChoice("0", "Camera 0", "0"), demo_choice()])
    window.camera_combo.setCurrentIndex(window.camera_combo.findData("0"))
    assert not window.save_button.isEnabled() and not window.save_action.isEnabled()
    window.choose_save_output()  # Ctrl+S on a camera asks nothing
    assert window.save_job is None
    window.camera_combo.setCurrentIndex(window.camera_combo.findData(demo_choice().id))
    assert window.save_button.isEnabled()


def test_the_save_dialog_proposes_a_name_and_adds_a_missing_extension(
    qtbot,
    make_window,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    window = make_window()
    asked: list[tuple[str, str]] = []

    def dialog(parent, title, proposed, filters):  # noqa: ANN001, ANN202
        asked.append((proposed, filters))
        return str(tmp_path / "typed"), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    monkeypatch.setattr(save_mod.os, "access", lambda p, mode: False)  # home, not assets/
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    window.choose_save_output()
    assert asked == [(str(tmp_path / "demo.sharp.mp4"), save_filter("x.mp4"))]
    job = window.save_job
    assert job is not None and job.output == str(tmp_path / "typed.mp4")
    assert finished(qtbot, job).ok
    # A name with a dot of its own gets the extension too: "Meeting 10.30" failed the save
    # ("must be a video file"). One of the formats offered, in any case, is kept.
    for typed, saved in (("Meeting 10.30", "Meeting 10.30.mp4"), ("clip.MKV", "clip.MKV")):
        monkeypatch.setattr(
            QFileDialog, "getSaveFileName", lambda *a, t=typed: (str(tmp_path / t), a[3])
        )
        window.choose_save_output()
        assert window.save_job.output == str(tmp_path / saved)
        assert finished(qtbot, window.save_job).ok


def test_a_name_typed_without_its_extension_is_not_replaced_unasked(
    qtbot,
    make_window,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    # The dialog asks about "talk", which does not exist; "talk.mp4", which the extension
    # makes of it, was replaced with the copy without a word.
    window = make_window()
    precious = tmp_path / "talk.mp4"
    precious.write_bytes(b"precious recording")
    proposed: list[str] = []

    def dialog(parent, title, name, filters):  # noqa: ANN001, ANN202
        proposed.append(name)
        return (str(tmp_path / "talk") if len(proposed) == 1 else ""), filters

    asked: list[str] = []

    def question(parent, title, text, *args):  # noqa: ANN001, ANN002, ANN202
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    monkeypatch.setattr(QMessageBox, "question", question)
    window.choose_save_output()
    assert asked == [f"talk.mp4 already exists in {tmp_path}. Replace it?"]
    assert proposed[1] == str(precious)  # back to the dialog, at the name it would have taken
    assert window.save_job is None
    assert precious.read_bytes() == b"precious recording"
    # Yes replaces it, as the dialog's own question does.
    proposed.clear()
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.Yes)
    window.choose_save_output()
    assert window.save_job is not None and window.save_job.output == str(precious)
    assert finished(qtbot, window.save_job).ok
    assert precious.read_bytes() != b"precious recording"


def test_closing_while_saving_asks_and_a_stop_keeps_the_frames(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,
    capsys,  # noqa: ANN001
) -> None:
    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    answers = [False]
    monkeypatch.setattr(window, "ask_stop_save", lambda: answers.pop(0))
    window.close()
    assert window.isVisible() and job.running()  # "No": the save and the window go on
    answers.append(True)
    window.close()
    assert not window.isVisible()
    assert job.result is not None and job.result.code == 130
    assert (tmp_path / "long.sharp.incomplete.avi").is_file()
    assert window.banner.kind != "save_warning"  # not said on a window going away
    assert window.bridge.engine is None
    # Where the frames went is said where it can still be read: nothing named the file.
    err = capsys.readouterr().err
    assert "sharpcam: Saving stopped: " in err and "long.sharp.incomplete.avi" in err, err


def test_the_stop_and_quit_question_says_where_the_frames_are_kept(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    window = make_window()
    # An earlier stop's frames hold the plain name: this one's go to the next free one.
    (tmp_path / "long.sharp.incomplete.avi").write_bytes(b"earlier")
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    asked: list[str] = []

    def question(parent, title, text, *args):  # noqa: ANN001, ANN002, ANN202
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", question)
    assert not window.ask_stop_save()
    assert asked and "kept, as long.sharp.incomplete-2.avi beside it." in asked[0], asked
    job.stop()
    result = finished(qtbot, job)
    assert any("long.sharp.incomplete-2.avi" in line for line in result.said), result.said
    # A photo is not kept part-way, and a folder's photos done are kept in its new folder.
    # Counted as the progress line counts them: a photo's and a folder's as photos.
    for source, said, counted in (
        ("big.jpg", "Nothing is kept of a photo not finished.", "(3 of 10 photos)"),
        ("pics", "The photos done so far are kept in pics.sharp.", "(3 of 10 photos)"),
    ):
        path = tmp_path / source
        if source == "pics":
            path.mkdir()
        out = tmp_path / (path.stem + ".sharp" + path.suffix)
        monkeypatch.setattr(
            window,
            "save_job",
            types.SimpleNamespace(source=str(path), output=str(out), done=3, total=10),
        )
        window.ask_stop_save()
        assert asked[-1].endswith(said), asked[-1]
        assert f"being saved {counted}. Stop it" in asked[-1], asked[-1]
    window.save_job.done, window.save_job.total = 1, 0  # a count without a total: one photo
    window.ask_stop_save()
    assert "being saved (1 photo so far). Stop it" in asked[-1], asked[-1]
    monkeypatch.undo()


def test_the_stop_button_stops_the_save(qtbot, make_window, long_source, tmp_path) -> None:  # noqa: ANN001
    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    window.save_stop_button.click()
    assert not window.save_stop_button.isEnabled()
    result = finished(qtbot, job)
    assert result.code == 130
    assert window.banner.kind == "save_warning"
    assert "long.sharp.incomplete.avi" in window.banner.text.text().replace("\u200b", "")
    assert window.banner.message.folder == str(tmp_path)  # where the kept frames are
    os.remove(tmp_path / "long.sharp.incomplete.avi")


def test_closing_after_stop_was_pressed_does_not_ask_again(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    # It asked "Stop it and quit?" of a save already stopping, and "No" kept nothing.
    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    asked: list[bool] = []
    monkeypatch.setattr(window, "ask_stop_save", lambda: asked.append(True) or False)
    window.save_stop_button.click()
    assert job.stopping
    window.close()
    assert not asked and not window.isVisible()
    assert job.result is not None and job.result.code == 130
    assert (tmp_path / "long.sharp.incomplete.avi").is_file()


def test_a_close_whose_stop_is_not_answered_in_time_kills_the_child(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    from app import window as window_mod

    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    monkeypatch.setattr(window, "ask_stop_save", lambda: True)
    monkeypatch.setattr(window_mod, "SAVE_STOP_WAIT_S", 0.0)  # a child stuck on a slow disk
    window.close()
    assert not window.isVisible()
    # Not left writing after the app had gone.
    assert job.result is not None and job.result.code is None
    assert job._proc.state() == job._proc.ProcessState.NotRunning


def test_save_is_not_offered_once_the_window_picks_a_camera_found_later(qtbot, make_window) -> None:  # noqa: ANN001
    from app.camera_list import CameraProbe

    window = make_window(start=False)  # the demo clip stands in while cameras are looked for
    assert window.save_button.isEnabled()
    camera = CameraChoice("/dev/video0", "Integrated Camera", "/dev/video0")
    window.wait_for_cameras(CameraProbe(lambda: [camera, demo_choice()]))
    qtbot.waitUntil(lambda: not window.cameras_pending, timeout=10_000)
    assert window.current_camera().id == camera.id
    assert not window.save_button.isEnabled() and not window.save_action.isEnabled()
    window.save_action.trigger()
    assert window.save_job is None


def test_a_folder_s_copies_go_into_the_new_folder_proposed(
    qtbot,
    make_window,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    photos = tmp_path / "my photos"
    photos.mkdir()
    for name in ("p1.jpg", "p2.jpg"):
        cv2.imwrite(str(photos / name), np.full((32, 48, 3), 90, np.uint8))
    window = make_window()
    window.open_file(str(photos))
    asked: list[str] = []

    def dialog(parent, title, proposed, filters):  # noqa: ANN001, ANN202
        asked.append(proposed)
        return proposed, filters  # Save, as offered

    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    counted: list[str] = []
    window.save_label.setText = counted.append
    window.choose_save_output()
    assert asked == [str(tmp_path / "my photos.sharp")]
    assert finished(qtbot, window.save_job).ok
    assert sorted(os.listdir(tmp_path / "my photos.sharp")) == ["p1.jpg", "p2.jpg"]
    # Counted as photos: "2 of 2 frames" was said of them.
    assert "Saving my photos.sharp… 2 of 2 photos" in counted, counted
    advice = window.banner.message.advice
    assert advice.startswith(f"2 images written to {tmp_path / 'my photos.sharp'}"), advice


def test_a_stop_not_answered_in_time_is_a_stop_that_names_what_was_left(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    monkeypatch.setattr(save_mod, "STOP_GRACE_S", 0.0)  # a child busy longer than the grace
    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path, ".mp4")
    window.save_stop_button.click()
    result = finished(qtbot, job)
    assert result.code is None and result.stopped
    assert window.banner.kind == "save_warning"
    shown = window.banner.text.text().replace("\u200b", "")
    assert "Saving stopped: it did not end when asked" in shown
    hidden = sorted(p for p in os.listdir(tmp_path) if p.startswith(".long.sharp.partial"))
    assert result.left == [str(tmp_path / p) for p in hidden]
    for name in hidden:
        assert name in shown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a bash stand-in; /proc")
def test_a_close_behind_an_encoder_slow_to_finish_keeps_the_frames_under_a_name(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,  # noqa: ANN001
    capsys,  # noqa: ANN001
) -> None:
    # x264 minutes behind on 4K frames: the save waited for it (up to 300 s) past the close's
    # 25 s, was killed, and FFmpeg finished the hidden .long.sharp.partial.mp4 after the app
    # had gone; the frames stayed there, unnamed ("did not end when asked").
    monkeypatch.setenv("SHARPCAM_FFMPEG", str(slow_to_finish_ffmpeg(tmp_path)))
    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path, ".mp4")
    monkeypatch.setattr(window, "ask_stop_save", lambda: True)
    try:
        window.close()
        assert not window.isVisible()
        assert job.result is not None and job.result.code == 130, job.result
    finally:
        job.kill()
        for pid in processes_naming(tmp_path / ".long.sharp.partial.mp4"):
            os.kill(pid, signal.SIGKILL)  # the FFmpeg the old wait left, when this fails
    kept = tmp_path / "long.sharp.incomplete.mp4"
    assert len(read_video(kept)) > 0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    err = capsys.readouterr().err
    assert "sharpcam: Saving stopped: interrupted: " in err and str(kept) in err, err


def _stop_question_answered_no(window, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: ANN001
    """The text of the question ``ask_stop_save`` puts, answered No: the save goes on."""
    asked: list[str] = []

    def question(parent, title, text, *rest):  # noqa: ANN001, ANN202
        asked.append(text)
        return QMessageBox.StandardButton.No

    with monkeypatch.context() as asking:  # the teardown's close is answered Yes again
        asking.setattr(QMessageBox, "question", question)
        assert not window.ask_stop_save()
    return asked[0]


def test_progress_of_a_file_without_a_frame_count_shows_the_frames_done(
    qtbot,
    make_window,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    window = make_window()
    clip = write_video(tmp_path / "c.avi", 24)
    job = window.save_copy(str(tmp_path / "o.mp4"), source=str(clip))
    window._on_save_progress(280, 0)  # as `frames 280/?` is read
    assert window.save_bar.maximum() == 0  # busy
    assert window.save_label.text() == "Saving o.mp4… 280 frames"
    assert window.save_bar.accessibleDescription() == "280 frames"
    job.done, job.total = 280, 0
    assert "(280 frames so far)" in _stop_question_answered_no(window, monkeypatch)
    window._on_save_progress(5, 24)
    assert window.save_label.text() == "Saving o.mp4… 5 of 24 frames"
    assert (window.save_bar.maximum(), window.save_bar.value()) == (24, 5)
    assert finished(qtbot, job).ok


def test_progress_says_one_frame_and_fills_the_bar_past_a_low_frame_count(
    qtbot,
    make_window,  # noqa: ANN001
) -> None:
    # A container's frame count is an estimate: past it, a value out of range left the bar
    # where it was (Qt ignores it), short of full. And one frame is not "1 frames".
    window = make_window()
    window._on_save_progress(20, 24)
    window._on_save_progress(30, 24)
    assert (window.save_bar.maximum(), window.save_bar.value()) == (24, 24)
    window._on_save_progress(1, 0)
    assert window.save_bar.accessibleDescription() == "1 frame"


def test_progress_past_the_announced_count_says_the_frames_done(
    qtbot,
    make_window,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    # A variable-rate clip announced 29 frames and decoded 30: the bar said "30 of 29 frames",
    # and the quit question the same.
    window = make_window()
    clip = write_video(tmp_path / "c.avi", 24)
    job = window.save_copy(str(tmp_path / "o.mp4"), source=str(clip))
    window._on_save_progress(30, 29)  # as `frames 30/29` is read
    said = [window.save_label.text(), window.save_bar.accessibleDescription()]
    full = (window.save_bar.maximum(), window.save_bar.value())
    job.done, job.total = 30, 29
    asked = _stop_question_answered_no(window, monkeypatch)
    assert finished(qtbot, job).ok  # first: a save left running outlived the test
    assert said == ["Saving o.mp4… 30 frames", "30 frames"]
    assert full == (29, 29)
    assert "(30 frames so far)" in asked and "of 29" not in asked


def test_progress_of_a_photo_counts_photos_not_frames(
    qtbot,
    make_window,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    # The bar said "1 frame" of a photo, where `process` says "1 image" and a folder's
    # progress counts photos.
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.full((40, 56, 3), 90, np.uint8))
    window = make_window()
    job = window.save_copy(str(tmp_path / "p.sharp.png"), source=str(photo))
    window._on_save_progress(1, 0)  # as `frames 1/?` is read
    said = [window.save_label.text(), window.save_bar.accessibleDescription()]
    window._on_save_progress(1, 1)
    said.append(window.save_label.text())
    assert finished(qtbot, job).ok  # first: a save left running outlived the test
    assert said == ["Saving p.sharp.png… 1 photo", "1 photo", "Saving p.sharp.png… 1 of 1 photos"]


def test_save_is_not_offered_while_the_model_fails(qtbot, make_window, tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    window = make_window(backend="onnx", model=str(bad))
    qtbot.waitUntil(lambda: window.bridge.model_failure is not None, timeout=15_000)
    qtbot.waitUntil(lambda: window.model_status.isVisibleTo(window), timeout=15_000)
    assert not window.save_button.isEnabled() and not window.save_action.isEnabled()
    assert "not working" in window.save_button.toolTip()


def test_save_is_not_offered_for_a_file_that_did_not_open(qtbot, make_window, tmp_path) -> None:  # noqa: ANN001
    # The demo clip played in its place, the button stayed on, and every save of it failed
    # ("cannot open video file"), a red banner over the yellow one.
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"x")
    window = make_window(backend="passthrough")
    with test_app.started(qtbot, window):
        window.open_file(str(broken))
    test_app.wait_frames(qtbot, window, 1)
    assert window.bridge.using_fallback
    assert not window.save_button.isEnabled() and not window.save_action.isEnabled()
    assert window.save_button.toolTip() == SAVE_UNOPENED_TIP
    window.choose_save_output()  # Ctrl+S: nothing
    assert window.save_job is None
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((40, 56, 3), 90, np.uint8))
    with test_app.started(qtbot, window):
        window.open_file(str(good))
    test_app.wait_frames(qtbot, window, 1)
    assert window.save_button.isEnabled() and window.save_button.toolTip() == SAVE_TIP


def test_a_failed_save_offers_no_folder(qtbot, make_window, tmp_path) -> None:  # noqa: ANN001
    window = make_window()
    job = window.save_copy(str(tmp_path / "o.txt"))
    assert finished(qtbot, job).code == 2
    assert window.banner.kind == "save_failed"
    assert window.banner.message.folder == ""
    assert not window.banner.folder_button.isVisibleTo(window)
    assert not window.banner.show_folder()


def test_show_folder_opens_nothing_for_a_message_without_a_folder(
    qtbot,
    monkeypatch,  # noqa: ANN001
) -> None:
    # An empty path is no folder: handed to the desktop, it opened the home folder or an
    # error box from the file manager (xdg-open "") instead of nothing.
    _holder, banner = test_app._banner(qtbot)
    opened: list[object] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    banner.show_message(UserMessage("camera", "Camera problem", "Plug it in"))
    assert banner.show_folder() is False and opened == []


def test_a_signal_closes_without_asking_and_the_save_keeps_its_frames(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    # A logout, `kill` or Ctrl+C in the terminal waits for no answer: a modal question held
    # the app open until it was killed outright.
    import signal

    from app.main import _close_on_signals

    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    asked: list[bool] = []
    monkeypatch.setattr(window, "ask_stop_save", lambda: asked.append(True) or True)
    restore = _close_on_signals(window)
    try:
        signal.raise_signal(signal.SIGTERM)
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=JOB_TIMEOUT_MS)
    finally:
        restore()
    assert asked == []
    assert job.result is not None and job.result.code == 130
    assert (tmp_path / "long.sharp.incomplete.avi").is_file()
    assert not window._close_without_asking  # a later close asks again


def test_a_quit_kept_open_during_a_save_asks_once(
    qtbot,
    make_window,
    long_source,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    # Passed on, the Quit made Qt close the window a second time: the question came twice.
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    from app.main import _QuitFilter

    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    answers: list[bool] = [False, True]
    asked: list[bool] = []

    def ask() -> bool:
        asked.append(True)
        return answers.pop(0)

    monkeypatch.setattr(window, "ask_stop_save", ask)
    quit_filter = _QuitFilter(window)
    app = QApplication.instance()
    assert quit_filter.eventFilter(app, QEvent(QEvent.Type.Quit)) is True  # no quit
    assert len(asked) == 1 and window.isVisible() and job.running()
    assert quit_filter.eventFilter(app, QEvent(QEvent.Type.Quit)) is False  # Qt goes on
    assert len(asked) == 2 and not window.isVisible()
    assert job.result is not None and job.result.code == 130


def test_hidden_frames_left_are_found_for_a_name_with_glob_characters(tmp_path: Path) -> None:
    out = tmp_path / "clip [1]*.mp4"
    job = SaveJob(str(tmp_path / "in.mp4"), str(out))
    job._started = time.time()
    from engine.sinks import partial_path

    partial_path(out).write_bytes(b"frames")
    (tmp_path / ".clip 1.partial.mp4").write_bytes(b"another file's")
    assert job._left_behind() == [str(partial_path(out))]


def test_ffmpegs_working_file_beside_the_hidden_video_is_found_too(tmp_path: Path) -> None:
    # process keeps the video under its hidden name while the sound goes in: a child killed
    # then leaves FFmpeg's working file beside it, which the hidden name's pattern missed.
    from engine.sinks import partial_path

    out = tmp_path / "call.mp4"
    job = SaveJob(str(tmp_path / "in.mp4"), str(out))
    job._started = time.time()
    hidden, ffmpegs = partial_path(out), partial_path(partial_path(out))
    assert ffmpegs.name == "..call.partial.partial.mp4"
    hidden.write_bytes(b"frames")
    ffmpegs.write_bytes(b"half a mux")
    (tmp_path / ".other.partial.mp4").write_bytes(b"another file's")
    assert job._left_behind() == sorted([str(ffmpegs), str(hidden)])


def test_show_folder_is_offered_where_something_was_kept_and_only_there(tmp_path: Path) -> None:
    # Offered after a stop before the first frame (an empty folder); not offered for a full
    # disk that kept 4 frames as .incomplete, a folder of photos that kept 6, or a killed
    # child's hidden file.
    out = tmp_path / "o.mp4"
    nothing = SaveResult(
        str(out), 130, True, ["interrupted before the first frame was done; nothing written"]
    )
    assert saved_folder(nothing) == ""
    unreadable = SaveResult(
        str(out),
        1,
        said=["error: cannot open video file /x/Clips kept in Drive/a.mp4: not a video"],
    )
    assert saved_folder(unreadable) == ""  # "kept in" in the input's own name
    stopped = SaveResult(
        str(out), 130, True, [f"interrupted: 171 of 12000 frames written to {tmp_path}/o.mp4"]
    )
    assert saved_folder(stopped) == str(tmp_path)
    for line in (  # the sink's words, without a count
        f"error: processing failed after 10 frames: the model broke; the frames written are "
        f"kept in {tmp_path}/o.incomplete.avi",
        f"error: cannot finish o.mp4: Permission denied; its frames are kept in {tmp_path}/x",
    ):
        assert saved_folder(SaveResult(str(out), 1, said=[line])) == str(tmp_path), line
    full = SaveResult(
        str(out),
        1,
        said=[f"error: cannot write: No space left on device; 4 frames are kept in {tmp_path}"
              "/o.incomplete.mp4"],
    )  # fmt: skip
    assert saved_folder(full) == str(tmp_path)
    photos = tmp_path / "pics.sharp"
    photos.mkdir()
    assert saved_folder(SaveResult(str(photos), 1, said=["error: failed"])) == ""
    (photos / "p1.jpg").write_bytes(b"x")
    assert saved_folder(SaveResult(str(photos), 1, said=["error: failed"])) == str(photos)
    hidden = tmp_path / "sub"
    hidden.mkdir()
    left = SaveResult(str(out), None, said=[], left=[str(hidden / ".o.partial.mp4")])
    assert saved_folder(left) == str(hidden)
    assert saved_folder(SaveResult(str(out), 0, said=["1 frame -> o.mp4"])) == str(tmp_path)


def test_the_banner_says_what_the_copy_was_made_with(
    qtbot,
    make_window,
    long_source,
    tmp_path,  # noqa: ANN001
) -> None:
    # Strength and noise reduction changed during a save: the copy keeps those it started
    # with (as it should), and nothing said so.
    window = make_window()
    window.strength_slider.setValue(100)
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    window.strength_slider.setValue(20)
    window.denoise_check.setChecked(True)
    job.stop()
    finished(qtbot, job)
    shown = window.banner.text.text().replace("\u200b", "")
    assert "Made at 100 % strength, noise reduction off." in shown, shown


def test_a_photos_copy_says_no_noise_reduction(qtbot, make_window, tmp_path) -> None:  # noqa: ANN001
    # Noise reduction is for videos: "noise reduction on" was said of a photo made without it.
    photo = tmp_path / "p.jpg"
    cv2.imwrite(str(photo), np.full((40, 56, 3), 90, np.uint8))
    window = make_window()
    window.denoise_check.setChecked(True)
    finished(qtbot, window.save_copy(str(tmp_path / "p.sharp.jpg"), source=str(photo)))
    shown = window.banner.text.text().replace("\u200b", "")
    assert "Made at 100 % strength." in shown and "noise reduction" not in shown, shown


def test_a_failed_save_does_not_say_what_a_copy_was_made_with(
    qtbot,
    make_window,
    tmp_path,  # noqa: ANN001
) -> None:
    # Nothing was made: "Made at 100 % strength" under a failure read as if a copy was written.
    window = make_window()
    job = window.save_copy(str(tmp_path / "o.txt"))
    assert finished(qtbot, job).code == 2
    assert window.banner.kind == "save_failed"
    assert "Made at" not in window.banner.text.text().replace("\u200b", "")


def test_a_grainy_copy_saved_without_noise_reduction_is_told_the_switch_is_on_now(
    qtbot,
    make_window,
    tmp_path,  # noqa: ANN001
) -> None:
    # Turned on during the save: "turn on Reduce noise in dim light" named a switch already on.
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:96]
    still = np.stack([60 + x // 2, 80 + y // 2, 120 + 0 * x], axis=2).astype(np.float32)
    dim = tmp_path / "dim.avi"
    writer = cv2.VideoWriter(str(dim), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (96, 64))
    for _ in range(10):
        writer.write(np.clip(still + rng.normal(0, 12, still.shape), 0, 255).astype(np.uint8))
    writer.release()
    window = make_window()
    job = window.save_copy(str(tmp_path / "o.avi"), source=str(dim))
    window.denoise_check.setChecked(True)  # the copy keeps it off, as it started
    assert finished(qtbot, job).ok
    shown = window.banner.text.text().replace("\u200b", "")
    assert "save it again (noise reduction is on now) to reduce it" in shown, shown
    assert "Reduce noise in dim light" not in shown, shown


def test_a_phones_upper_case_container_is_kept(tmp_path: Path) -> None:
    # A phone's "IMG_0001.MOV" was proposed as an MP4: the container it came in was lost.
    clip = tmp_path / "IMG_0001.MOV"
    clip.write_bytes(b"")
    assert default_output(str(clip)) == str(tmp_path / "IMG_0001.sharp.mov")


def test_a_link_whose_target_is_gone_still_holds_its_name(tmp_path: Path) -> None:
    # Proposed, the copy would be written through the link to wherever it points.
    clip = tmp_path / "talk.mp4"
    clip.write_bytes(b"")
    (tmp_path / "talk.sharp.mp4").symlink_to(tmp_path / "gone" / "elsewhere.mp4")
    assert default_output(str(clip)) == str(tmp_path / "talk.sharp-2.mp4")


def test_a_path_with_a_count_in_it_is_no_count(tmp_path: Path) -> None:
    # "frames 3/4" found anywhere in a line took an error naming /clips/frames 3/4.mp4 for
    # progress: the reason the save failed was never said.
    job = SaveJob(str(tmp_path / "c.mp4"), str(tmp_path / "o.mp4"))
    counts: list[tuple[int, int]] = []
    job.progress.connect(lambda done, total: counts.append((done, total)))
    job._take("sharpcam: error: cannot open video file /clips/frames 3/4.mp4: not a video")
    assert counts == [] and job._said == [
        "error: cannot open video file /clips/frames 3/4.mp4: not a video"
    ]


def test_blank_lines_and_the_last_words_without_a_newline_are_read_right(tmp_path: Path) -> None:
    # A blank last line blanked the banner's "N frames written to"; a last line cut off
    # without its newline (a child ended mid-line) was never said.
    job = SaveJob(str(tmp_path / "c.mp4"), str(tmp_path / "o.mp4"))
    for line in ("in -> o", "24 frames -> o.mp4", ""):
        job._take(line)
    assert (
        describe_result(SaveResult("o.mp4", 0, said=job._said))[2] == "24 frames written to o.mp4"
    )
    job._pending = b"sharpcam: error: cannot write o.mp4: No space left on device"
    job._end(1)
    assert job.result is not None
    assert describe_result(job.result)[2] == "cannot write o.mp4: No space left on device"


def test_a_child_that_exited_names_no_hidden_file_of_another_run(tmp_path: Path) -> None:
    # Only a killed child leaves its frames unnamed: one that exited said where they are, and
    # a hidden file beside (the command line writing the same name) is not this save's.
    from engine.sinks import partial_path

    out = tmp_path / "o.mp4"
    job = SaveJob(str(tmp_path / "c.mp4"), str(out))
    job._started = time.time()
    partial_path(out).write_bytes(b"another run's frames")
    job._take("sharpcam: error: cannot open video file c.mp4")
    job._end(1)
    assert job.result is not None and job.result.left == []
    assert saved_folder(job.result) == ""


def test_a_halted_save_says_where_its_frames_went_and_the_warning_after_it() -> None:
    # A stop while the index moved: the line after it (a copy not removed) hid where they are.
    kept = "interrupted while moving the index of o.mp4 before its frames: 5 frames kept in o.i.mp4"
    said = ["in -> o", "note: 1 subtitle track not copied", kept]
    said.append("warning: .o.tmp.mp4 could not be removed (a copy): remove it")
    text = describe_result(SaveResult("o.mp4", 130, True, said))[2]
    # ...and the warning is said too: the copy it names holds as much as the output, hidden.
    assert text.splitlines() == [kept, ".o.tmp.mp4 could not be removed (a copy): remove it"]
    # A stop that said no "interrupted" line shows its last line, once.
    last = "warning: the input's sound could not be read"
    assert describe_result(SaveResult("o.mp4", 130, True, ["in -> o", last]))[2] == last


def test_a_failure_the_command_did_not_word_shows_its_last_lines() -> None:
    # A crash in Python (exit 1 with a traceback) said "Saving failed" and nothing else.
    said = [
        "in -> o",
        "Traceback (most recent call last):",
        'File "main.py", line 9',
        "MemoryError",
    ]
    kind, head, text = describe_result(SaveResult("o.mp4", 1, said=said))
    assert (kind, head) == ("save_failed", "Saving failed") and text.endswith("MemoryError")


def test_a_save_after_a_halted_one_can_be_halted_too(
    qtbot,
    make_window,
    long_source,
    tmp_path,  # noqa: ANN001
) -> None:
    # The first Stop greyed the button, and the next save had no Stop; its label said
    # "Stopping…" until the child ended, not a count that would read as still saving.
    window = make_window()
    job = saving_long_clip(qtbot, window, long_source, tmp_path)
    window.save_stop_button.click()
    window._on_save_progress(job.done + 1, LONG_FRAMES)  # a count read after the click
    assert window.save_label.text() == "Stopping…"
    finished(qtbot, job)
    window._on_save_progress(3, 4)  # the bar full of the one before
    clip = write_video(tmp_path / "c.avi", 4)
    again = window.save_copy(str(tmp_path / "c.sharp.avi"), source=str(clip))
    assert window.save_stop_button.isEnabled()
    assert window.save_bar.maximum() == 0  # busy until its own first count
    assert finished(qtbot, again).ok


def test_a_photo_named_without_its_extension_gets_its_own(
    qtbot,
    make_window,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    # A photo's copy typed as "holiday" was made "holiday.mp4", and `process` refused it.
    photo = tmp_path / "p.jpg"
    cv2.imwrite(str(photo), np.full((40, 56, 3), 90, np.uint8))
    window = make_window()
    window.open_file(str(photo))
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *a: (str(tmp_path / "holiday"), a[3])
    )
    window.choose_save_output()
    assert window.save_job is not None and window.save_job.output == str(tmp_path / "holiday.jpg")
    assert finished(qtbot, window.save_job).ok


def test_a_save_made_with_a_users_own_model_is_not_called_a_problem_for_it() -> None:
    # Every save with a model no manifest lists said "saved with a problem": the model the
    # user picked is theirs to vouch for. The warning stays in the details; a real problem
    # beside it still makes the headline.
    unverified = (
        "warning: /m/own.onnx: not listed in a manifest.json beside it; loading it unverified"
    )
    said = [unverified, "12 frames -> o.mp4"]
    kind, head, details = describe_result(SaveResult("o.mp4", 0, said=said))
    assert (kind, head) == ("saved", "Sharpened copy saved")
    assert "loading it unverified" in details
    said = [unverified, "warning: o.mp4 has no sound: FFmpeg could not copy it", said[-1]]
    kind, head, _ = describe_result(SaveResult("o.mp4", 0, said=said))
    assert (kind, head) == ("save_warning", "Sharpened copy saved without its sound")

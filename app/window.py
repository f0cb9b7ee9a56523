"""The main window: preview on the left, controls on the right, live statistics below.

Views paint and send commands to :class:`app.engine_bridge.EngineBridge`; they never touch the
engine or its threads. Every choice is written back to the settings store shortly after it is
made (a crash or a kill loses nothing) and when the window closes, and closing stops the engine
(threads joined within 2 s).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6 import QtGui
from PySide6.QtCore import (
    QByteArray,
    QEvent,
    QObject,
    QPointF,
    QRectF,
    QSettings,
    QSize,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import (
    QAccessible,
    QAction,
    QCloseEvent,
    QColor,
    QCursor,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QFont,
    QFontInfo,
    QFontMetrics,
    QGuiApplication,
    QIcon,
    QKeyEvent,
    QKeySequence,
    QMoveEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QResizeEvent,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QApplication,
    QBoxLayout,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSystemTrayIcon,
    QToolTip,
    QVBoxLayout,
    QWidget,
    QWidgetItem,
)

from app.camera_list import (
    DEMO_ID,
    RESOLUTIONS,
    CameraChoice,
    CameraProbe,
    ResolutionChoice,
    demo_choice,
    distinct_names,
    reads_virtual_device,
)
from app.engine_bridge import RETRY_LABELS, EngineBridge, ModelFailure, UserMessage
from app.preview import AFTER_LABEL, AFTER_SHORT, PreviewWidget
from app.save import (
    GRAIN_ADVICE_WORDS,
    SaveJob,
    SaveResult,
    default_output,
    describe_result,
    save_filter,
    saved_folder,
)
from app.settings import AppSettings, format_scale, save_settings, unsaved_reason
from engine.backends import SCALE_LADDER
from engine.denoise import MIN_SIGMA as DENOISE_MIN_SIGMA
from engine.denoise import colour_blur as denoise_colour_blur
from engine.denoise import worth_telling as denoise_worth_telling
from engine.sinks import free_incomplete_path
from engine.sources import IMAGE_EXTENSIONS, is_camera_number, source_kind
from engine.stats import EngineStats

log = logging.getLogger(__name__)

ICON_PATH = Path(__file__).resolve().parent / "resources" / "icon.svg"
STOP_TIMEOUT_S = 2.0
#: How long a close waits for a save it stopped to keep its frames (see app.save): longer
#: than app.save.STOP_GRACE_S, which the child's own end is sized to.
SAVE_STOP_WAIT_S = 35.0
SAVE_TIP = (
    "Sharpen every frame of the file playing, at full size, into a new file (Ctrl+S); the "
    "live video goes on. For a video, photo or folder of photos opened, not a camera"
)
SAVE_NO_MODEL_TIP = "The model is not working (see above): a copy would not be sharpened"
SAVE_UNOPENED_TIP = "The file did not open (see above): the demo clip plays in its place"
SIDEBAR_WIDTH = 320
# The text size SIDEBAR_WIDTH was laid out for: the style sheet's 10 pt at 96 dpi.
SIDEBAR_TEXT_PX = 13
SIDEBAR_MARGIN = 20  # left and right, inside the sidebar
# The sidebar scrolls where the screen is too short for it (a 1080p laptop at 150 %: 720
# logical pixels less the taskbar); its scroll bar has a strip of its own beside it.
SIDEBAR_SCROLLBAR = 8
# The first window's size, within the screen's free area.
FIRST_SIZE = (1240, 700)
# The narrowest screen the window keeps to at larger text (a 1280x720 laptop, less the
# window's frame): the sidebar stops widening there. Widened in step with 32 pt text it was
# 1,058 px, and the window's least width 1,494 px, past such a screen's edge.
NARROWEST_SCREEN = 1280 - 16
# A change is saved this long after the last one: a slider dragged, a window resized or the
# divider moved with the keys writes once, not at every step.
SAVE_DELAY_MS = 500
# How long a start waits for the camera list (a probe stuck in a driver may never end) before
# it opens what the picker stands on: the stand-in (the demo clip), or the camera named.
CAMERA_WAIT_S = 30.0
LOOKING_FOR_CAMERAS = "Looking for cameras…"
# The processing-size picker's tooltip (while it can be used).
SCALE_TIP = (
    "The model runs on a smaller copy of each frame and only its correction is enlarged: "
    "faster, a little less sharp. Auto picks the largest size that keeps up."
)
DENOISE_TIP = (
    "Averages frames where the picture holds still, which removes a dim camera's grain; "
    "flattens the grain on what moves within the frame, keeping its edges (averaging it would "
    "leave trails); and smooths colour speckle everywhere. A clean picture is not changed."
)
# The line under the preview, per view mode (preview.VIEW_MODES).
#: What "Open…" offers first (any file can still be picked: "All files").
_VIDEO_SUFFIXES = (
    ".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".wmv", ".flv", ".mts", ".m2ts", ".ts",
    ".3gp", ".mpg", ".mpeg", ".ogv",
)  # fmt: skip
OPEN_FILTER = (
    "Videos and photos ("
    + " ".join(f"*{ext}" for ext in sorted({*_VIDEO_SUFFIXES, *IMAGE_EXTENSIONS}))
    + ");;All files (*)"
)
VIEW_HINTS = {
    "split": "Drag the divider (or ← →) to compare · Space toggles sharpening",
    "side": "Before left, after right · Space toggles sharpening",
    "after": "After only · Space toggles sharpening",
}
#: The same keys where the whole hint does not fit (an 800 px screen): cut, it lost them.
SHORT_VIEW_HINTS = {
    "split": "← → compare · Space: sharpen on/off",
    "side": "Before | after · Space: sharpen on/off",
    "after": "Space: sharpen on/off",
}

STYLE = """
QMainWindow, QWidget#central { background: #0f1117; }
QWidget { color: #e2e8f0; font-size: 10pt; }
QFrame#sidebar { background: #161a23; border-left: 1px solid #232938; }
QScrollArea#sidebarScroll, QScrollArea#sidebarScroll > QWidget { background: #161a23;
                                                                  border: none; }
/* The setup dialog's words and steps scroll too (larger text): in the sidebar's dark bar, not
   Fusion's white one. */
QScrollArea#sidebarScroll QScrollBar:vertical,
QScrollArea#setupBody QScrollBar:vertical { background: #161a23; width: 8px; margin: 0; }
QScrollArea#sidebarScroll QScrollBar::handle:vertical,
QScrollArea#setupBody QScrollBar::handle:vertical { background: #334155; border-radius: 4px;
                                                    min-height: 32px; }
QScrollArea#sidebarScroll QScrollBar::add-line:vertical,
QScrollArea#sidebarScroll QScrollBar::sub-line:vertical,
QScrollArea#setupBody QScrollBar::add-line:vertical,
QScrollArea#setupBody QScrollBar::sub-line:vertical { height: 0; }
QScrollArea#sidebarScroll QScrollBar::add-page:vertical,
QScrollArea#sidebarScroll QScrollBar::sub-page:vertical,
QScrollArea#setupBody QScrollBar::add-page:vertical,
QScrollArea#setupBody QScrollBar::sub-page:vertical { background: none; }
QLabel#title { font-size: 15pt; font-weight: 700; color: #f8fafc; }
QLabel#subtitle { color: #94a3b8; font-size: 9pt; }
QLabel#section { color: #7dd3fc; font-size: 8pt; font-weight: 700; letter-spacing: 1px;
                 margin-top: 10px; }
QLabel#hint { color: #94a3b8; font-size: 8.5pt; }
QLabel#value { color: #f1f5f9; font-weight: 600; }
/* A label beside a control that is off (the strength while sharpening is off) is greyed with
   it: the style sheet's colours above hold in every state unless a state says otherwise. */
QLabel:disabled, QLabel#value:disabled { color: #64748b; }
QLabel#problem { color: #fca5a5; }
QComboBox { background: #1e2430; border: 1px solid #2c3446; border-radius: 7px;
            padding: 6px 10px; min-height: 20px; }
QComboBox:disabled { color: #64748b; }
QComboBox::drop-down { border: none; width: 26px; }
QComboBox::down-arrow { image: url(@CHEVRON@); width: 12px; height: 12px; }
QComboBox QAbstractItemView { background: #1e2430; border: 1px solid #2c3446;
                              selection-background-color: #0ea5e9; }
QPushButton { background: #1e2430; border: 1px solid #2c3446; border-radius: 7px;
              padding: 6px 12px; }
QPushButton:hover { border-color: #38bdf8; }
QPushButton:disabled { color: #64748b; border-color: #232938; }
/* Not bold: the wider text cut "Side by side" off in the fixed-width sidebar. */
QPushButton:checked { background: #0ea5e9; color: #0b1220; border-color: #0ea5e9; }
QPushButton#primary { background: #0ea5e9; color: #0b1220; border: none; font-weight: 600; }
/* Keyboard focus must be visible (Tab reaches every control). The style sheet's borders replace
   the platform's focus frame, so without these a keyboard user could not tell where Tab went.
   2 px borders with 1 px less padding: the controls keep their size when focused. */
QPushButton:focus { border: 2px solid #e0f2fe; padding: 5px 11px; }
QPushButton#primary:focus { border: 2px solid #e0f2fe; padding: 4px 10px; }
QComboBox:focus { border: 2px solid #e0f2fe; padding: 5px 9px; }
QFrame#banner QScrollArea:focus { border: 2px solid #e0f2fe; border-radius: 4px; }
QSlider::groove:horizontal { height: 6px; background: #2c3446; border-radius: 3px; }
QSlider::sub-page:horizontal { background: #38bdf8; border-radius: 3px; }
QSlider::handle:horizontal { background: #f8fafc; width: 16px; height: 16px; margin: -6px 0;
                             border-radius: 8px; }
QSlider::sub-page:horizontal:disabled { background: #475569; }
QSlider { border: 2px solid transparent; border-radius: 8px; padding: 2px 4px; }
QSlider:focus { border-color: #e0f2fe; }
QCheckBox { spacing: 8px; }
QStatusBar { background: #0b0d12; color: #cbd5e1; border-top: 1px solid #232938; }
QStatusBar QLabel { padding: 2px 8px; }
QFrame#banner { border-radius: 9px; }
QFrame#banner[severity="warning"] { background: #3b2f0b; border: 1px solid #a16207; }
QFrame#banner[severity="error"] { background: #3f1212; border: 1px solid #b91c1c; }
QFrame#banner[severity="info"] { background: #0c2a1f; border: 1px solid #15803d; }
QFrame#banner QLabel { color: #fde68a; }
QFrame#banner QScrollArea, QFrame#banner QWidget#qt_scrollarea_viewport { background: transparent;
                                                                       border: none; }
QFrame#banner QScrollBar:vertical { background: transparent; width: 8px; margin: 0; }
QFrame#banner QScrollBar::handle:vertical { background: #a16207; border-radius: 4px;
                                            min-height: 16px; }
QFrame#banner[severity="error"] QScrollBar::handle:vertical { background: #b91c1c; }
QFrame#banner QScrollBar::add-line:vertical,
QFrame#banner QScrollBar::sub-line:vertical { height: 0; }
QFrame#banner QScrollBar::add-page:vertical,
QFrame#banner QScrollBar::sub-page:vertical { background: none; }
QFrame#banner[severity="error"] QLabel { color: #fecaca; }
QFrame#banner[severity="info"] QLabel { color: #bbf7d0; }
QFrame#banner[severity="info"] QScrollBar::handle:vertical { background: #15803d; }
QProgressBar { background: #1e2430; border: 1px solid #2c3446; border-radius: 7px;
               text-align: center; min-height: 18px; }
/* Darker than the accent: the light percentage over #0ea5e9 read at 2.25:1 (4.8:1 here). */
QProgressBar::chunk { background: #0369a1; border-radius: 6px; }
QPlainTextEdit { background: #0b0d12; border: 1px solid #2c3446; border-radius: 7px;
                 font-family: monospace; }
/* The setup steps scroll sideways: Fusion's white bar and its near-white arrows (1.08:1) on the
   dark dialog could not be seen. */
QPlainTextEdit QScrollBar { background: #161a23; }
QPlainTextEdit QScrollBar:horizontal { height: 10px; margin: 0; }
QPlainTextEdit QScrollBar:vertical { width: 10px; margin: 0; }
QPlainTextEdit QScrollBar::handle { background: #475569; border-radius: 4px; min-width: 32px;
                                    min-height: 32px; }
QPlainTextEdit QScrollBar::add-line, QPlainTextEdit QScrollBar::sub-line { width: 0; height: 0; }
QPlainTextEdit QScrollBar::add-page, QPlainTextEdit QScrollBar::sub-page { background: none; }
/* Windows of their own (the virtual camera's setup steps, the tray menu, a picker's popup) take
   the light text above too, but not the window's background: under a light system palette
   their text was #e2e8f0 on #efefef (1.07:1), unreadable. */
QDialog { background: #161a23; }
QMenu { background: #1e2430; border: 1px solid #2c3446; padding: 4px; }
QMenu::item { padding: 5px 20px 5px 24px; background: transparent; }
QMenu::item:selected { background: #0ea5e9; color: #0b1220; }
QMenu::item:disabled { color: #64748b; }
QMenu::separator { height: 1px; background: #2c3446; margin: 4px 8px; }
QComboBoxPrivateContainer { background: #1e2430; border: 1px solid #2c3446; }
"""


STYLE = STYLE.replace("@CHEVRON@", (ICON_PATH.parent / "chevron-down.svg").as_posix())
#: The text size STYLE was laid out for (its ``QWidget`` font-size): larger application text
#: scales every size in it (:func:`style_for_font`).
STYLE_DESIGN_PT = 10.0
_STYLE_PT = re.compile(r"(\d+(?:\.\d+)?)pt\b")


def style_for_font(font: QFont, style: str | None = None) -> str:
    """``style`` (STYLE) with every point size scaled by ``font``'s size / STYLE_DESIGN_PT,
    where that is larger: never smaller, so the design's own look is the same text.

    ``font`` is the application's, which Qt takes from the desktop's: a low-vision person's
    14-20 pt there got the sheet's fixed 10 pt (8 pt section titles) all the same.
    """
    style = STYLE if style is None else style
    pt = font.pointSizeF()
    if pt <= 0:  # a font set in pixels
        pt = QFontInfo(font).pointSizeF()
    factor = pt / STYLE_DESIGN_PT
    if factor <= 1:
        return style
    return _STYLE_PT.sub(lambda m: f"{round(float(m.group(1)) * factor, 2):g}pt", style)


def app_icon() -> QIcon:
    return QIcon(str(ICON_PATH))


class ToggleSwitch(QCheckBox):
    """An on/off switch (a checkbox painted as a pill), for settings that act at once."""

    HEIGHT = 30  # the track and, around it, the keyboard focus ring
    TRACK_X = 4  # room for the ring left of the track

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setMinimumHeight(self.HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        fm = self.fontMetrics()
        # Taller than HEIGHT with text taller than it (a desktop's 24 pt, as style_for_font
        # scales the sheet): at 30 px the text's tops and descenders were cut off.
        height = max(self.HEIGHT, fm.height() + 4)
        return QSize(self.TRACK_X + 42 + 10 + fm.horizontalAdvance(self.text()) + 4, height)

    def hitButton(self, pos: Any) -> bool:  # noqa: N802 - Qt API
        return self.rect().contains(pos)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        track = QRectF(self.TRACK_X, (self.height() - 22) / 2, 42, 22)
        on = self.isChecked()
        if self.hasFocus():
            # Painted by hand, so no style draws its focus frame: Tab must show where it went.
            p.setPen(QPen(QColor("#e0f2fe"), 2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRoundedRect(track.adjusted(-3, -3, 3, 3), 14, 14)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor("#0ea5e9") if on else QColor("#334155"))
        if not self.isEnabled():
            p.setOpacity(0.5)
        p.drawRoundedRect(track, 11, 11)
        knob_x = track.right() - 11 if on else track.left() + 11
        p.setBrush(QColor("#f8fafc"))
        p.drawEllipse(QPointF(knob_x, track.center().y()), 8.5, 8.5)
        p.setPen(QColor("#e2e8f0"))
        p.drawText(
            QRectF(track.right() + 10, 0, self.width() - track.right() - 10, self.height()),
            Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
            self.text(),
        )
        p.end()


class ElidedLabel(QLabel):
    """A one-line label that never widens its window: a long text is drawn cut with "…" to the
    width it gets, and shown whole in its tooltip (only then: a tooltip repeating the line in
    view said nothing, and one of a status line that changes went stale while it showed).
    ``text()`` stays the whole text.

    A video's long file name or a webcam's long model name under the preview set the window's
    minimum width (1,492 px for one camera's name), wider than a 1280 px screen."""

    def __init__(self, text: str = "", *, hug: bool = False) -> None:
        # hug: no wider than the whole text, so a neighbour gets the rest of a narrow row.
        self._hug = hug
        self._short = ""
        super().__init__()
        self.setText(text)

    def setText(self, text: str, short: str = "") -> None:  # noqa: N802 - Qt API
        """``short``: what is drawn instead of cutting ``text``, where it fits whole."""
        self._short = short
        super().setText(text)
        self._measure()
        self._update_tip()

    def _measure(self) -> None:
        if self._hug:
            self.ensurePolished()  # the style sheet's font
            margins = self.contentsMargins()
            text = self.text()
            need = self.fontMetrics().horizontalAdvance(text) + margins.left() + margins.right()
            self.setMaximumWidth(max(need + 2, 1))  # 2: rounding of the advance

    def _update_tip(self) -> None:
        tip = self.text() if self.shown_text() != self.text() else ""
        if tip != self.toolTip():
            self.setToolTip(tip)
            if tip and QToolTip.isVisible() and self.underMouse():
                QToolTip.showText(QCursor.pos(), tip, self)  # a shown one is not redrawn

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._measure()  # another font, another width of the same text

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._update_tip()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(0, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(0, super().sizeHint().height())

    def shown_text(self) -> str:
        """What is drawn at the width the label has now."""
        metrics, width = self.fontMetrics(), self.contentsRect().width()
        text = self.text()
        if self._short and metrics.horizontalAdvance(text) > width:
            text = self._short
        return metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, width)

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        rect = self.contentsRect()
        shown = self.shown_text()
        self.style().drawItemText(
            painter,
            rect,
            int(self.alignment()),
            self.palette(),
            self.isEnabled(),
            shown,
            self.foregroundRole(),
        )


class Sidebar(QFrame):
    """The fixed-width control column.

    Its wrapped labels (the virtual camera's status, the backend line) take more lines than
    their minimum size says, and Qt leaves height-for-width out of a window's minimum size: at
    the window's minimum height their last lines were cut off. The width is fixed, so the
    height they need is known, and it is what the sidebar asks for at least.
    """

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        hint = super().minimumSizeHint()
        if self.layout() is None or not self.hasHeightForWidth():
            return hint
        return QSize(hint.width(), max(hint.height(), self.heightForWidth(self.minimumWidth())))


class BannerText(QScrollArea):
    """The banner's words: all of them where the window has room, else ``MIN_LINES`` of them
    and a scroll bar for the rest.

    A word-wrapped label asks for the height its width needs, and Qt's layouts give it that
    whatever the window has left: at the window's minimum height a model failure's advice (eight
    lines in a minimum-width window) pushed the preview down over the line under it. Here the
    height the words need is only the size asked for; the least taken is a few lines.
    """

    MIN_LINES = 3
    #: Where the banner's controls sit under the words (larger text): they take the room of
    #: a line, and at 32 pt a banner with three controls and three lines made the window's
    #: least height 754 px, past a 1280x720 screen's.
    MIN_LINES_ABOVE_CONTROLS = 2
    RING = 4  # px kept around the words for the focus ring (a 2 px border, a 2 px gap)

    def __init__(self, label: QLabel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidget(label)
        self.setWidgetResizable(True)  # as wide as the banner; as tall as its words need
        label.setAutoFillBackground(False)  # setWidget turned it on: the banner's colour shows
        self.viewport().setAutoFillBackground(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        # Not a stop of its own in the Tab order while every word shows (they are selectable
        # with the mouse); one when they scroll, where the arrows and Page Down scroll them:
        # at the window's least size a keyboard never reached the advice below the fold.
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setAccessibleName("Message")
        self.verticalScrollBar().rangeChanged.connect(self._on_range)
        # Room for the focus ring (the style sheet's border) around the words, not over them.
        m = self.RING
        self.setViewportMargins(m, m, m, m)
        self.least_lines = self.MIN_LINES  # the banner sets it (see MessageBanner._arrange)

    #: Another width: the words may need other places to break (MessageBanner._fit_words).
    width_changed = Signal()

    def room(self) -> int:
        """The width a line of the words may take, the scroll bar's too (it may come)."""
        bar = self.verticalScrollBar().sizeHint().width()
        return self.width() - 2 * self.RING - bar

    def _on_range(self, _low: int, high: int) -> None:
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus if high > 0 else Qt.FocusPolicy.NoFocus)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        # Qt's scroll area takes the arrows and Page Up/Down; Home and End as a text view does.
        ends = {
            Qt.Key.Key_Home: QAbstractSlider.SliderAction.SliderToMinimum,
            Qt.Key.Key_End: QAbstractSlider.SliderAction.SliderToMaximum,
        }
        action = ends.get(Qt.Key(event.key()))
        if action is None:
            super().keyPressEvent(event)
        else:
            self.verticalScrollBar().triggerAction(action)

    def _needed(self) -> int:
        """The height the words need at the width they have now."""
        label = self.widget()
        label.ensurePolished()  # the style sheet's font
        ring = 2 * self.RING
        return label.heightForWidth(max(self.width() - ring, 1)) + ring

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self.widget().fontMetrics().averageCharWidth() * 40, self._needed())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        label = self.widget()
        label.ensurePolished()
        lines = self.least_lines * label.fontMetrics().lineSpacing() + 4 + 2 * self.RING  # 4: bold
        return QSize(label.fontMetrics().averageCharWidth() * 10, min(self._needed(), lines))

    def refit(self) -> None:
        """The words changed: ask for the height they need, and settle the scroll bar."""
        self.updateGeometry()
        self._fit_bar()

    def _fit_bar(self) -> None:
        # Qt decides on the bar at the width the words have while it shows: a bar that came
        # while the banner grew to a new message's height narrowed the words by its width, they
        # took a line more, and it stayed, hiding the last line ("noise reduction off." of a
        # saved copy) in a window with room for all of them.
        fits = self._needed() <= self.height()
        policy = (
            Qt.ScrollBarPolicy.ScrollBarAlwaysOff if fits else Qt.ScrollBarPolicy.ScrollBarAsNeeded
        )
        if self.verticalScrollBarPolicy() != policy:
            self.setVerticalScrollBarPolicy(policy)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.updateGeometry()  # another width, another number of lines
            self.width_changed.emit()
        self._fit_bar()


#: A banner's colour per message kind (the others are warnings).
_SEVERITY = {"model": "error", "engine": "error", "save_failed": "error", "saved": "info"}


#: Qt 6.8 and later (SharpCam takes PySide6 6.6 on): a banner is announced to a screen reader.
_Announcement = getattr(QtGui, "QAccessibleAnnouncementEvent", None)


class MessageBanner(QFrame):
    """In-window messages with advice; the stream keeps running underneath.

    Every message said and not yet taken down (:meth:`take_down`) or dismissed is kept, and
    the newest shows: a newer one covered "settings cannot be saved" or "camera lost,
    reconnecting", and when it went the banner went with it, though the older one still
    applied. Messages that say the same show as one, kept until the last of them is taken
    down (each by whoever said it).
    """

    #: The banner is about to hide with the focus on a control of its own (Dismiss, or the
    #: words, which a click selects): the window puts the focus somewhere first.
    hiding_with_focus = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.setProperty("severity", "warning")
        lay = QBoxLayout(QBoxLayout.Direction.LeftToRight, self)
        lay.setContentsMargins(12, 8, 8, 8)
        lay.setSpacing(lay.spacing())  # the style's, across and down alike (see _arrange)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.text_area = BannerText(self.text)
        lay.addWidget(self.text_area, 1)
        # Beside the words, or below them where the banner is narrower than both (see
        # _arrange): in a row, in two, or one above another. Placed there by _place.
        self._controls = QGridLayout()
        # How many wait under the one on show: Dismiss brings up the next, which would
        # otherwise look like a Dismiss that did not work.
        self.more = QLabel()
        self.more.setToolTip("Messages that still apply, under this one")
        self.more.hide()
        self.folder_button = QPushButton("Show folder")
        self.folder_button.setToolTip("Open the folder that holds it")
        self.folder_button.clicked.connect(self.show_folder)
        self.folder_button.hide()
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.clicked.connect(self.dismiss)
        self._place("beside")
        lay.addLayout(self._controls)
        lay.setAlignment(self._controls, Qt.AlignmentFlag.AlignTop)
        self._arranged = "beside"  # see _arrange
        self.text_area.width_changed.connect(self._fit_words)
        self.kind = ""  # the shown message's kind; "" when none
        self.message: UserMessage | None = None  # the message on show
        self._said: list[UserMessage] = []  # oldest first, each object once
        QGuiApplication.clipboard().dataChanged.connect(self._clean_copy)
        self.hide()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        # As narrow as the buttons one above another under the words (_arrange): beside
        # them, at 32 pt text the banner's least width was 728 px (887 with "Show folder"
        # and "1 more"), and the window's 1,592 px, past a 1280 px screen.
        hint = super().minimumSizeHint()
        margins = self.layout().contentsMargins()
        text, controls = self._least_widths()
        least = margins.left() + margins.right() + max(text, *controls, 0)
        return QSize(least, hint.height())

    def _least_widths(self) -> tuple[int, list[int]]:
        """The least widths of the words and of each button (or label) shown beside them."""
        shown = (self.text_area, self.more, self.folder_button, self.dismiss_button)
        items = [QWidgetItem(w) for w in shown]
        text, *controls = (item.minimumSize().width() for item in items if not item.isEmpty())
        return text, controls

    def _arrange(self) -> None:
        """The buttons beside the words where the banner has room for both, as at the
        design's text size; else below them in a row; where the row too is wider than the
        banner (larger text in the window's least preview), Show folder above "1 more" and
        Dismiss, or one above another where those two do not fit side by side either."""
        self._fit_words()  # another text size: other words may be wider than the banner
        margins = self.layout().contentsMargins()
        room = self.width() - margins.left() - margins.right()
        text, controls = self._least_widths()
        gap = self.layout().spacing()
        row = sum(controls) + gap * (len(controls) - 1)
        pair = [QWidgetItem(w).minimumSize().width() for w in (self.more, self.dismiss_button)]
        paired = not QWidgetItem(self.more).isEmpty() and len(controls) == 3
        if room >= text + gap + row:
            how = "beside"
        elif room >= row:
            how = "below"
        elif paired and room >= sum(pair) + gap:
            how = "paired"
        else:
            how = "stacked"
        words = self.text_area
        lines = words.MIN_LINES if how == "beside" else words.MIN_LINES_ABOVE_CONTROLS
        if lines != words.least_lines:
            words.least_lines = lines
            words.updateGeometry()
        if how == self._arranged:
            return
        self._arranged = how
        lay, down = self.layout(), QBoxLayout.Direction.TopToBottom
        lay.setDirection(QBoxLayout.Direction.LeftToRight if how == "beside" else down)
        # At the end of the line, as beside the words (the right, or the left right-to-left).
        trailing = Qt.AlignmentFlag.AlignRight
        lay.setAlignment(self._controls, Qt.AlignmentFlag.AlignTop if how == "beside" else trailing)
        self._place(how)
        lay.activate()  # before it is painted in the arrangement it had

    def _place(self, how: str) -> None:
        """The controls' places in their grid for ``how`` (see _arrange)."""
        grid = self._controls
        for widget in (self.more, self.folder_button, self.dismiss_button):
            grid.removeWidget(widget)
        top, trailing = Qt.AlignmentFlag.AlignTop, Qt.AlignmentFlag.AlignRight
        if how == "stacked":
            for at, widget in enumerate((self.more, self.folder_button, self.dismiss_button)):
                grid.addWidget(widget, at, 0, trailing)
            return
        if how == "paired":
            # "1 more" beside Dismiss, the button it is about; at 32 pt the three one above
            # another took 57 px more of a 720 px screen's height.
            grid.addWidget(self.folder_button, 0, 0, 1, 2, trailing)
            grid.addWidget(self.more, 1, 0, trailing | Qt.AlignmentFlag.AlignVCenter)
            grid.addWidget(self.dismiss_button, 1, 1, trailing)
            return
        # "1 more" with no alignment of its own: as tall as the buttons' row, so level with
        # their text (a height fixed to theirs stayed the old text's after a change of text
        # size).
        grid.addWidget(self.more, 0, 0)
        grid.addWidget(self.folder_button, 0, 1, top)
        grid.addWidget(self.dismiss_button, 0, 2, top)

    def _fit_words(self) -> None:
        """The message's words again, with places to break any word wider than a line."""
        msg = self.message
        if msg is None:
            return
        room = self.text_area.room()
        bold = QFont(self.text.font())
        bold.setBold(True)

        def fits(font: QFont) -> Callable[[str], bool]:
            metrics = QFontMetrics(font)
            return lambda word: metrics.horizontalAdvance(word) <= room

        title = _html(_breakable(msg.text, fits=fits(bold)))
        advice = _html(_breakable(msg.advice, fits=fits(self.text.font())))
        words = f"<b>{title}</b><br>" + advice.replace("\n", "<br>")
        if words != self.text.text():
            self.text.setText(words)
            self.text_area.refit()

    def event(self, event: QEvent) -> bool:
        done = super().event(event)
        # A button shown or hidden, or another text size (the words' and the buttons' least
        # widths): their layout asks to be done again.
        if event.type() == QEvent.Type.LayoutRequest:
            self._arrange()
        return done

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._arrange()

    def _clean_copy(self) -> None:
        # The zero-width spaces that let long words wrap (_breakable) would go with a path
        # copied from the banner into a terminal or a file dialog, and it would not be found.
        clipboard = QGuiApplication.clipboard()
        text = clipboard.text()
        if _ZWSP in text and self.text.hasSelectedText():
            clipboard.setText(text.replace(_ZWSP, ""))

    def show_message(self, msg: UserMessage) -> None:
        """Show ``msg`` on top of the others (moved there when it was kept already)."""
        self._said = [m for m in self._said if m is not msg]
        self._said.append(msg)
        self._update()

    def take_down(self, msg: UserMessage) -> None:
        """``msg`` no longer applies: the next newest shows, or the banner hides."""
        self._said = [m for m in self._said if m is not msg]
        self._update()

    def dismiss(self) -> None:
        """The person has read the message on show: gone until it is said anew."""
        if self.message is not None:
            # Equal ones with it: they show as one, and would bring it straight back.
            shown = self.message
            self._said = [m for m in self._said if m != shown]
        self._update()

    def show_folder(self) -> bool:
        """Open the folder the message on show names in the file manager; False when it
        names none or none opens."""
        if self.message is None or not self.message.folder:
            return False
        return QDesktopServices.openUrl(QUrl.fromLocalFile(self.message.folder))

    def waiting(self) -> list[UserMessage]:
        """The messages kept, newest (the one on show) first, each text once."""
        out: list[UserMessage] = []
        for msg in reversed(self._said):
            if msg not in out:
                out.append(msg)
        return out

    def _update(self) -> None:
        kept = self.waiting()
        if not kept:
            self.kind, self.message = "", None
            focus = QApplication.focusWidget()
            if focus is not None and self.isAncestorOf(focus):
                # Left to Qt, the focus went on to the next control in the Tab order, the
                # camera picker, whose list the next Space opened instead of turning
                # sharpening off.
                self.hiding_with_focus.emit()
            self.hide()
            return
        msg = kept[0]
        news = msg is not self.message
        self.kind, self.message = msg.kind, msg
        severity = _SEVERITY.get(msg.kind, "warning")
        self.setProperty("severity", severity)
        # The labels too: a property selector above them is not re-read with the frame's, and
        # an error's text stayed in the warning's colour after a warning (or the reverse).
        bar = self.text_area.verticalScrollBar()
        for widget in (self, self.text, self.more, bar):
            self.style().unpolish(widget)
            self.style().polish(widget)
        self._fit_words()
        self.text_area.verticalScrollBar().setValue(0)  # a new message is read from its start
        self.text_area.refit()
        self.folder_button.setVisible(bool(msg.folder))
        self.more.setText(f"{len(kept) - 1} more")
        self.more.setVisible(len(kept) > 1)
        self.dismiss_button.setToolTip(
            "Hide this message and show the next" if len(kept) > 1 else "Hide this message"
        )
        # For a screen reader: the words are no Tab stop while they fit, so a message came and
        # went unsaid, and Tab to Dismiss said only "Dismiss". Now it is announced as it shows
        # (at once for an error), and Dismiss is described by it.
        words = " ".join(f"{msg.text} {msg.advice}".split())
        self.dismiss_button.setAccessibleDescription(words)
        self.show()
        if news and _Announcement is not None:
            said = _Announcement(self, words)
            if severity == "error":
                said.setPoliteness(QAccessible.AnnouncementPoliteness.Assertive)
            QAccessible.updateAccessibility(said)


class SetupBody(QScrollArea):
    """The setup dialog's heading, steps and notes, scrolling (the buttons under them do not).

    At larger text they need more height than a screen has (1,017 px at 32 pt, 720 px wide):
    laid out in the dialog itself, the heading, the notes and the steps were cut, with no way to
    read them. Here they ask for the height they need, as they did there (the dialog's size at
    the design's text is Qt's as before), and take at least the labels' heights and
    ``MIN_STEP_LINES`` of steps; what is left scrolls.
    """

    MIN_STEP_LINES = 4

    def __init__(self, steps: QPlainTextEdit, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("setupBody")
        self.steps = steps
        content = QWidget()
        self.content = QVBoxLayout(content)
        self.content.setContentsMargins(0, 0, 0, 0)
        self.setWidget(content)
        self.setWidgetResizable(True)  # as wide as the dialog; as tall as it has room for
        # setWidget turned it on: under a light system palette the words' area was light.
        content.setAutoFillBackground(False)
        self.viewport().setAutoFillBackground(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        # Not a Tab stop of its own: the steps take the focus, and Tab to one below the fold
        # scrolls it into view.
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.viewport().installEventFilter(self)

    def least_steps_height(self) -> int:
        """``MIN_STEP_LINES`` of the steps, with their frame, margins and sideways bar."""
        steps = self.steps
        steps.ensurePolished()  # the style sheet's font and bar
        margins = 2 * (steps.frameWidth() + round(steps.document().documentMargin()))
        bar = steps.horizontalScrollBar().sizeHint().height()
        return self.MIN_STEP_LINES * steps.fontMetrics().lineSpacing() + margins + bar

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        # Qt's is held to 36 by 24 lines of text: the words' own, as in the dialog before.
        return self.widget().sizeHint()

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt API
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt API
        return self.content.totalHeightForWidth(width)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        # A few lines: the dialog, not this, keeps its least size.
        return QSize(super().minimumSizeHint().width(), self.least_steps_height())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if watched is self.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_least()
        return super().eventFilter(watched, event)

    def _fit_least(self) -> None:
        # Qt gives the words the height their width needs only while the viewport has it; less,
        # and the labels were squeezed, cut, where they should scroll. Their width is the
        # viewport's (the bar's taken, where it shows).
        self.steps.setMinimumHeight(self.least_steps_height())
        least = self.content.minimumHeightForWidth(self.viewport().width())
        if self.widget().minimumHeight() != least:
            self.widget().setMinimumHeight(least)

    def refit(self) -> None:
        """The words changed (another heading, a note shown or hidden)."""
        self.content.invalidate()
        self._fit_least()
        self.updateGeometry()


class VirtualCameraDialog(QDialog):
    """Setup steps for a virtual camera on this OS, with Retry. Non-modal (``show()``)."""

    retry_requested = Signal()

    MISSING = (
        "<b>No virtual camera found</b><br>Zoom, Teams and Meet see SharpCam through "
        "a virtual camera. Create one once, then press Retry."
    )
    BUSY = (
        "<b>The virtual camera is in use</b><br>Another program is sending video to it, so "
        "SharpCam cannot. Free it (or add a device), then press Retry."
    )
    #: Windows and macOS have OBS's one camera: no device can be added there.
    BUSY_ONE = (
        "<b>The virtual camera is in use</b><br>Another program is sending video to it, so "
        "SharpCam cannot. Free it, then press Retry."
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up the virtual camera")
        # Wide enough for the Linux steps' longest command: at 620 it read "card_label=SharpC".
        self.setMinimumSize(720, 380)
        lay = QVBoxLayout(self)
        self.steps = QPlainTextEdit()
        self.body = SetupBody(self.steps)
        words = self.body.content
        self.head = QLabel(self.MISSING)
        self.head.setWordWrap(True)
        words.addWidget(self.head)
        self.steps.setReadOnly(True)
        # It takes the focus as the dialog opens: unnamed, a screen reader said nothing there.
        self.steps.setAccessibleName("Setup steps")
        # Commands to paste in a terminal: wrapped, `... exclusive_caps=1` / `card_label=...`
        # read as two commands. A long one scrolls sideways instead.
        self.steps.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        words.addWidget(self.steps, 1)
        self.remembered = QLabel(
            "SharpCam remembers the virtual camera as on, so it tried to start it with the "
            "video. <b>Close</b> forgets that (it is not tried again at the next launch); "
            "<b>Retry</b> tries again."
        )
        self.remembered.setWordWrap(True)
        self.remembered.hide()
        words.addWidget(self.remembered)
        # What the latest Retry found: without it, a Retry that found nothing again looked like
        # a button that did nothing. Not `self.result`: that hid QDialog.result(), its exit code.
        self.outcome = QLabel()
        self.outcome.setWordWrap(True)
        self.outcome.hide()
        words.addWidget(self.outcome)
        lay.addWidget(self.body, 1)
        row = QHBoxLayout()
        copy = QPushButton("Copy steps")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.steps.toPlainText()))
        self.retry_button = QPushButton("Retry")
        self.retry_button.setObjectName("primary")
        # Enter presses it, as its colour says; left to Qt, the first button (Copy steps) was
        # the default, and Enter copied the steps over the clipboard instead of retrying.
        self.retry_button.setDefault(True)
        self.retry_button.clicked.connect(self.retry_requested)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        row.addWidget(copy)
        row.addStretch(1)
        row.addWidget(self.close_button)
        row.addWidget(self.retry_button)
        lay.addLayout(row)

    def set_guidance(self, text: str, *, remembered: bool = False, busy: bool = False) -> None:
        """``remembered``: the device the remembered choice asked for is missing, and Close is
        the person's answer to that (the choice is forgotten), which they must be told.
        ``busy``: a device exists but another program is sending to it (not "not found")."""
        one = not sys.platform.startswith("linux")
        self.head.setText((self.BUSY_ONE if one else self.BUSY) if busy else self.MISSING)
        self.setWindowTitle("The virtual camera is in use" if busy else "Set up the virtual camera")
        self.steps.setPlainText(text)
        self.remembered.setVisible(remembered)
        self._refit()

    def show_trying(self) -> None:
        """A Retry is under way (a driver may take seconds to answer)."""
        self.say_result("Looking for the virtual camera…")
        self.retry_button.setEnabled(False)

    def say_result(self, text: str) -> None:
        """Say what the latest Retry found ("" says nothing); Retry can be pressed again."""
        self.retry_button.setEnabled(True)
        self.outcome.setText(text)
        self.outcome.setVisible(bool(text))
        self._refit()

    #: Room kept above the dialog in the screen's free area for its title bar and frame.
    FRAME_ROOM = 48

    def _refit(self) -> None:
        self.body.refit()
        if self.isVisible():
            self._fit_height()  # a note that came while it shows: taller, where there is room

    def _fit_height(self) -> None:
        """As tall as the words need at this width, up to the screen's free height; never
        shorter than it is (Qt's size at the design's text, or the person's).

        Qt opens a dialog at most two thirds of the screen tall: at 20 pt it needs 572 px of a
        1280x720 screen's 672, and opened at 480: the words were cut."""
        need = self.layout().totalHeightForWidth(self.width())
        screen = self.screen()
        if screen is not None:
            need = min(need, screen.availableGeometry().height() - self.FRAME_ROOM)
        if need > self.height():
            self.resize(self.width(), need)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        if not event.spontaneous():
            self.body.refit()
            self._fit_height()  # before QDialog places it: on the screen at this size
        super().showEvent(event)


class MainWindow(QMainWindow):
    """The SharpCam window.

    Args:
        bridge: the engine bridge (owns the engine).
        store, settings: the settings store and the values read from it.
        cameras: picker entries (the demo clip included).
        source: a source forced from the command line (camera index or file), or None.
        backend, model: the inference backend and model file.
        tray: create a system-tray icon when the platform has a tray.
        demo_fallback: play the demo clip, with a message, when the picked source fails to open;
            False leaves no video instead (:attr:`EngineBridge.start_finished` False).
        camera_probe: lists more cameras on a worker thread (see :meth:`wait_for_cameras`).
    """

    closed = Signal()

    def __init__(
        self,
        bridge: EngineBridge,
        *,
        store: QSettings,
        settings: AppSettings,
        cameras: list[CameraChoice],
        source: str | None = None,
        backend: str | None = None,
        model: str | None = None,
        tray: bool = True,
        demo_fallback: bool = True,
        camera_probe: CameraProbe | None = None,
    ) -> None:
        super().__init__()
        # Every change is saved shortly after it is made (a crash or a kill lost them all when
        # they were saved only on close); restarted by each change, so a slider dragged through
        # a hundred values writes once.
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_now)
        self._save_problem: UserMessage | None = None  # shown while saving fails
        # The failure logged last ("where (why)"): logged once, not at every change, until a
        # save works again or fails another way.
        self._save_logged: str | None = None
        self.bridge = bridge
        self.demo_fallback = demo_fallback
        self.store = store
        self.settings = settings
        # What the store held as read, then as last saved: a save writes only what changed
        # since, so a second SharpCam open at the same time keeps its own changes.
        self._stored = replace(settings)
        self.backend = backend or settings.backend
        self.model = model
        self.cameras = list(cameras)
        if not any(c.is_demo for c in self.cameras):
            self.cameras.append(demo_choice())
        self._cli_choice: CameraChoice | None = None  # named on the command line
        self._opened_choice: CameraChoice | None = None  # a file opened in the window
        self._open_folder = str(Path.home())  # where "Open…" starts: the last file's folder
        self._absent_source = ""  # a remembered camera not plugged in at start
        # Read once: the settings object is what a save writes, and a save while the cameras
        # are still being listed must not make the stand-in the camera picked once they are.
        self._remembered_source = settings.source
        # The source a save keeps while the one picked has failed to open: the last one that
        # opened, or the one remembered at launch. `--source 7` for a camera that does not
        # exist was remembered, and the next launch fell back to the demo clip without a word.
        self._opened_source = settings.source
        self._unopened: str | None = None  # the picker entry whose latest start failed to open
        # The demo clip is remembered only when the person picked it: as the stand-in for no
        # camera at the first launch, or named by `--source assets/demo.mp4` for a bug report,
        # it became the camera of every later launch, webcam plugged in or not.
        self._demo_picked = False
        # The camera mode picked; the picker shows none while a file plays (see
        # _update_resolution_enabled).
        self._resolution_key = RESOLUTIONS[0].key
        # The picker stands on what the window picked itself (no --source, no pick by the
        # person): the cameras a probe finds later may pick another (see wait_for_cameras).
        self._auto_pick = source is None
        self._camera_probe: CameraProbe | None = None
        self._cameras_pending = False  # the probe has not delivered its list yet
        self._start_deferred = False  # a start asked for meanwhile, run once it has
        self._cameras_waited_out = False  # a start gave up waiting: later ones do not wait
        # Bounds that wait: a camera driver that never answers the probe must not leave the
        # window without video for good.
        self._camera_wait = QTimer(self)
        self._camera_wait.setSingleShot(True)
        self._camera_wait.timeout.connect(self._on_camera_wait_over)
        if source is not None:
            self._add_cli_source(source)
        self.virtual_dialog: VirtualCameraDialog | None = None
        self.tray: QSystemTrayIcon | None = None
        # What the person chose for the virtual camera, and what is remembered: only what they
        # do changes it. The bridge turns the camera off by itself (a device that fails
        # mid-stream, a stream that ends), and such an "off" saved made the next launch start
        # without it. But a turn-on of theirs that finds no device is remembered as off, as the
        # switch shows it: a remembered "on" nothing in the window showed brought the setup
        # dialog back at every launch, with no way to stop it.
        self._virtual_pref = settings.virtual_camera
        # An open the person did not ask for just now (the remembered choice at launch, or one
        # kept across a restart, opened with the video) found no device: the setup dialog asks
        # them, and the choice stays remembered until they answer. Closing the dialog is an
        # answer (off: not asked again at every launch); quitting with it still open is not, so
        # a driver not loaded yet at launch does not silently forget the choice.
        self._virtual_asking = False
        self._virtual_by_person = False  # the person's own turn-on or off is under way
        self._virtual_shown: tuple[bool, str] = (False, "")  # the bridge's last on/off, device
        # The setup steps last shown, kept while no virtual camera could be opened: the sidebar
        # offers them again (closed, the dialog could not be brought back).
        self._virtual_guidance: str | None = None
        self._virtual_retrying = False  # the setup dialog's Retry awaits its answer
        self._model_failure_shown: ModelFailure | None = None
        self._closing = False
        self.save_job: SaveJob | None = None  # the sharpened copy being saved
        self._closing_save = False  # a close is stopping the save (then goes on)
        self._close_without_asking = False  # see close_without_asking
        self._save_said: UserMessage | None = None  # the banner's word on the last save
        self._save_noun = "frame"  # what the save under way counts: frames, or photos
        self._format_size: tuple[int, int] | None = None  # the size the format line says
        self._last_stats: Any = None
        self._suggesting_denoise = False  # the hint says a grainy picture wants the switch on
        # The camera the picker stands on: a pick that is refused goes back to it.
        self._camera_id = ""
        self._refusal: UserMessage | None = None  # the banner's refusal of a pick, while up

        self.setWindowTitle("SharpCam")
        self.setWindowIcon(app_icon())
        self._follow_app_font()
        self._build_ui()
        # After the layout, whose least size the first size keeps to.
        self._fit_first_size()
        if settings.geometry:
            self.restoreGeometry(QByteArray(settings.geometry))
        self._build_actions()
        self._select_initial_source(source)
        self._apply_settings_to_controls()
        self._focus_home(Qt.FocusReason.OtherFocusReason)
        self._connect_bridge()
        if settings.virtual_camera:
            # Wanted from the start: the bridge sends to it once the first start runs.
            self.bridge.set_virtual_camera(True)
        if tray:
            self._build_tray()
        if camera_probe is not None:
            self.wait_for_cameras(camera_probe)

    def _focus_home(self, reason: Qt.FocusReason) -> None:
        """Give the focus where the window first puts it.

        The divider takes it: its keys (← →, as the hint under the preview says) work at once,
        and it leaves Space to sharpening (it shows no ring until a key is used, or ``reason``
        is the keyboard's). With no divider shown, no control takes it: left to Qt, the first
        control in the Tab order got it as the window opened, the camera picker, which took
        Space to open its list and showed its focus ring before anyone pressed a key.
        """
        home = self.preview if self.preview.mode == "split" else self
        home.setFocus(reason)

    def _on_banner_hiding_with_focus(self) -> None:
        # Space pressed Dismiss (a click gives it no focus): the keyboard is in use, and the
        # ring shows where its focus went.
        keyboard = self.banner.dismiss_button.hasFocus()
        self._focus_home(
            Qt.FocusReason.TabFocusReason if keyboard else Qt.FocusReason.OtherFocusReason
        )

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if (
            event.type() == QEvent.Type.FocusIn
            and event.reason()  # type: ignore[attr-defined]
            in (Qt.FocusReason.TabFocusReason, Qt.FocusReason.BacktabFocusReason)
            and isinstance(watched, QWidget)
            and self.sidebar.isAncestorOf(watched)
        ):
            # Tab from the preview goes through the window, not the scroll area, which scrolls
            # to a control only when Tab starts inside it: the camera picker took the focus out
            # of sight. Only Tab: a click, or the window active again, must not scroll it.
            self.sidebar_scroll.ensureWidgetVisible(watched)
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and watched in self._takes_space
            and event.key() == Qt.Key.Key_Space  # type: ignore[attr-defined]
            and event.modifiers() == Qt.KeyboardModifier.NoModifier  # type: ignore[attr-defined]
        ):
            event.accept()  # the focused button or picker takes Space, not the shortcut
            return True
        return super().eventFilter(watched, event)

    # --- construction --------------------------------------------------------------------------
    def _add_cli_source(self, source: str) -> None:
        if self._find_source(source) is not None:
            return
        self._cli_choice = _named_source(source)
        self.cameras.insert(0, self._cli_choice)

    def choose_file(self) -> None:
        """Ask for a video or photo of the person's own (a file dialog) and play it."""
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a video or photo", self._open_folder, OPEN_FILTER
        )
        if path:
            self.open_file(path)

    def open_file(self, path: str) -> None:
        """Play ``path`` (a video, a photo or a folder of photos) in place of the camera, as
        ``--source`` does: listed in the camera picker as "File: NAME" (one file at a time:
        it replaces the file opened or given with ``--source`` before; a camera stays
        listed), picked, and the stream restarts on it. It loops, is sent to calls when the
        virtual camera is on, and is not remembered, the bundled clip included: the next
        start opens the camera picked before. A file that does not open says so as
        ``--source`` does."""
        if self._save_timer.isActive():
            # A camera picked a moment ago is saved as picked: by the time the delayed save
            # ran, the file (not remembered) was current, and the pick was lost.
            self.save_now()
        path = os.path.abspath(path)
        self._open_folder = os.path.dirname(path) if os.path.isfile(path) else path
        old = [c for c in (self._cli_choice, self._opened_choice) if c is not None and c.is_demo]
        choice = self._find_source(path)
        if choice is None:
            self._opened_choice = choice = _named_source(path)
            self._offer_cameras(self.cameras)  # listed, to be picked
        stale = [c for c in old if c is not choice]
        if self._cli_choice in stale:
            self._cli_choice = None
        if self._opened_choice in stale:
            self._opened_choice = None
        remembered_demo = self._demo_picked
        index = self.camera_combo.findData(choice.id)
        if index == self.camera_combo.currentIndex():
            self._on_camera_changed()  # the same file again: played again from its start
        else:
            self.camera_combo.setCurrentIndex(index)
        if choice.id == DEMO_ID:
            self._demo_picked = remembered_demo  # opened as a file: not a pick to remember
        if any(c in self.cameras for c in stale) and not self._closing:
            # Kept until now, as the one playing may have been one of them.
            self._offer_cameras([c for c in self.cameras if c not in stale])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if _dropped_path(event) is not None:
            # A copy whatever the drag proposed: a move (Shift held) lets the file manager
            # delete the original once it is dropped.
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        path = _dropped_path(event)
        if path is None:
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.open_file(path)

    def _add_camera_item(self, cam: CameraChoice) -> None:
        # The sidebar's picker cuts a long model name off mid-letter: the whole name on hover.
        self.camera_combo.addItem(cam.name, cam.id)
        self.camera_combo.setItemData(
            self.camera_combo.count() - 1, cam.name, Qt.ItemDataRole.ToolTipRole
        )

    def _camera_tooltip(self, *_: object) -> None:
        if getattr(self, "_cameras_pending", False):
            return  # it says the cameras are being looked for
        self.camera_combo.setToolTip(self.camera_combo.currentText())

    def set_cameras(self, cameras: list[CameraChoice]) -> None:
        """Offer ``cameras`` (one was plugged in or unplugged) without restarting the stream.

        The camera in use stays picked, and listed even when it was unplugged: the engine is
        reconnecting to it, and jumping to another would restart the stream mid-call. The one
        exception: the demo clip standing in for the remembered camera (not plugged in at
        launch) gives way to that camera once it is listed.
        """
        self._offer_cameras(cameras)
        if self._stands_in() and not self._cameras_pending and not self._closing:
            back = self._find_source(self._absent_source)
            if back is not None:
                log.info("%s is connected again: switching to it", back.name)
                self.camera_combo.setCurrentIndex(self.camera_combo.findData(back.id))

    def _offer_cameras(self, cameras: list[CameraChoice]) -> None:
        current = self.current_camera()
        if not current.is_demo and source_kind(current.source) == "camera":
            # By number (Windows, macOS), a camera's place in the list moves with an unplug:
            # the reconnect reopened its old number, another camera or none.
            now = next((c for c in cameras if c.id == current.id), None)
            taken = any(c.source == current.source and c.id != current.id for c in cameras)
            if now is not None:  # moved, or back
                self.bridge.retarget_camera(current.source, now.source, taken=taken)
            elif taken:
                self.bridge.retarget_camera(current.source, None, taken=True)
        new = list(cameras)
        if not any(c.is_demo for c in new):
            new.append(demo_choice())
        listed = {c.name for c in new}
        for named in (self._cli_choice, self._opened_choice, current):
            if named is not None and named.id not in {c.id for c in new}:
                if named.name in listed:
                    # The unplugged camera kept (in use, reconnecting) shared its model's name
                    # with the other one listed, which lost its "(2)" once alone. Numbered
                    # again, the names stacked ("HD Webcam (2) (2)"): it is said unplugged.
                    named = distinct_names(
                        [*new, replace(named, name=f"{named.name} (unplugged)")]
                    )[-1]
                new.insert(0, named)
        self.cameras = new
        self.camera_combo.blockSignals(True)
        self.camera_combo.clear()
        for cam in new:
            self._add_camera_item(cam)
        self.camera_combo.setCurrentIndex(self.camera_combo.findData(current.id))
        self.camera_combo.blockSignals(False)
        self._camera_tooltip()

    def wait_for_cameras(self, probe: CameraProbe) -> None:
        """Offer the cameras ``probe`` finds (started here) once it has, without waiting for
        them: the window shows and works meanwhile.

        Until then the picker holds what the window has (the demo clip at least), and a start
        on a source the window picked itself waits for the list (the preview says so): the
        remembered camera, or else the first one found, is what then plays, not a stand-in
        for a moment. A source named on the command line, or picked by the person, stays
        picked; a file starts at once, a camera once the probe is done with the cameras.
        A start waits ``CAMERA_WAIT_S`` at most; the list, found later, is still offered.
        """
        self._camera_probe = probe
        self._cameras_pending = True
        self.camera_combo.setToolTip(LOOKING_FOR_CAMERAS)
        # Queued: the probe emits from its worker thread, and the slot builds widgets.
        probe.found.connect(self._on_cameras_found, Qt.ConnectionType.QueuedConnection)
        probe.start()
        if probe.done:
            # Listed (and emitted) before the connection: taken now; the queued copy, if any,
            # finds nothing pending.
            self._on_cameras_found(probe.wait(0) or [])

    @property
    def cameras_pending(self) -> bool:
        """A camera probe has not delivered its list yet."""
        return self._cameras_pending

    def _on_cameras_found(self, cameras: list[CameraChoice]) -> None:
        if not self._cameras_pending or self._closing:
            return  # taken already (a start that waited for it), or the window is closing
        self._cameras_pending = False
        self._offer_cameras(cameras)  # a source named or picked stays picked
        self._camera_tooltip()  # the name picked, for "looking for cameras"
        if self._auto_pick:
            # The window's own pick was a stand-in: pick again, among the cameras found.
            self.camera_combo.blockSignals(True)
            self._select_initial_source(None)
            self.camera_combo.blockSignals(False)
            self._update_resolution_enabled()
        if self._start_deferred:  # the probe no longer opens the cameras: the start goes on
            self.start_stream()

    def _waits_for_cameras(self) -> bool:
        """A start now must wait for the probe's list (see :meth:`wait_for_cameras`)."""
        if not self._cameras_pending or self._cameras_waited_out:
            return False
        # The window's own pick is a stand-in until the list comes. A camera opened while the
        # probe opens index after index finds it busy (V4L2 and Media Foundation let one user
        # set a camera up), or the probe misses it; a file shares nothing with the probe.
        return self._auto_pick or not self.current_camera().is_demo

    def _stop_waiting_for_cameras(self) -> None:
        log.warning("no camera list after %.0f s: starting without it", CAMERA_WAIT_S)
        self._auto_pick = False  # what plays now; the list, once found, is offered
        self._cameras_waited_out = True  # and no later start waits for it again

    def _on_camera_wait_over(self) -> None:
        if self._closing or not self._start_deferred or not self._waits_for_cameras():
            return
        self._stop_waiting_for_cameras()
        self.start_stream()

    def _find_source(self, source: str) -> CameraChoice | None:
        """The picker entry for a camera id/index or a file path (compared resolved)."""
        # On Linux the picker lists cameras by device node: index "2" is "/dev/video2".
        names = {source, f"/dev/video{source}"} if is_camera_number(source) else {source}
        for c in self.cameras:
            if names & {c.id, c.source}:
                return c
            if c.is_demo and Path(c.source).resolve() == Path(source).resolve():
                return c
        if os.path.islink(source):
            # A device named by a link (/dev/v4l/by-id/usb-...-video-index0): the camera listed
            # by its node. Compared by string only, it was listed twice and, remembered, not
            # found at the next launch, which opened the first camera instead.
            real = os.path.realpath(source)
            for c in self.cameras:
                if (
                    not (c.is_demo or is_camera_number(c.source))
                    and os.path.realpath(c.source) == real
                ):
                    return c
        return None

    def _fit_first_size(self) -> None:
        """FIRST_SIZE, or less on a screen whose free area is smaller (a fixed 1240x700 ran
        past a 1280x720 logical screen's taskbar)."""
        screen = self.screen()
        w, h = FIRST_SIZE
        w += self.sidebar.minimumWidth() - SIDEBAR_WIDTH  # a sidebar widened for larger text
        if screen is not None:
            free = screen.availableGeometry()
            # Room for the window's frame and title bar, which the free area includes.
            w, h = min(w, free.width() - 16), min(h, free.height() - 48)
        # No less than the layout's least size: Qt would widen a smaller one past the screen.
        least = self.minimumSizeHint()
        self.resize(max(w, least.width()), max(h, least.height()))

    def event(self, event: QEvent) -> bool:
        kind = event.type()
        # The desktop's text changed while the window was open (Qt passes neither event to
        # changeEvent; a desktop's theme change may reset the application font with no
        # ApplicationFontChange): the style sheet's sizes were the old text's, and the
        # controls kept its family too. The window's FontChange this brings fits the sidebar.
        if kind == QEvent.Type.ApplicationFontChange or (
            kind == QEvent.Type.ThemeChange and QApplication.font() != self._style_font
        ):
            self._follow_app_font()
        return super().event(event)

    def _follow_app_font(self) -> None:
        self._style_font = QApplication.font()
        self.setStyleSheet(style_for_font(self._style_font))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        built = getattr(self, "sidebar_scroll", None) is not None  # the first polish is before
        if event.type() == QEvent.Type.FontChange and built:
            sending = self._virtual_shown[0]
            if sending:
                # The device's name, shortened to the old width in one unbreakable line, was
                # the sidebar's least width: it held the sidebar there, a little wider at
                # every change (320 px at 10 pt became 634 after 24 and 32 pt).
                self.virtual_status.clear()
            self._fit_sidebar()
            if sending:
                self._show_virtual_state()  # the device's name, shortened to the new width

    def _fit_sidebar(self) -> None:
        """Give the sidebar the width of the text size now (:func:`sidebar_width`), no wider
        than leaves the window inside NARROWEST_SCREEN, and no narrower than its controls."""
        side = self.sidebar
        margins = self._preview_column.contentsMargins()
        preview = margins.left() + margins.right() + self.preview.minimumWidth()
        most = NARROWEST_SCREEN - preview - SIDEBAR_SCROLLBAR
        # Past 32 pt even its controls' least width is wider: then the window, not a control,
        # runs past that screen.
        need = side.layout().minimumSize().width()
        width = max(min(sidebar_width(self), most), need)
        side.setFixedWidth(width)
        self.sidebar_scroll.setFixedWidth(width + SIDEBAR_SCROLLBAR)

    def _build_ui(self) -> None:
        central = QWidget()
        central.setObjectName("central")
        root = QHBoxLayout(central)
        root.setContentsMargins(0, 0, 0, 0)
        root.setSpacing(0)

        left = QVBoxLayout()
        left.setContentsMargins(14, 14, 14, 14)
        left.setSpacing(10)
        self.banner = MessageBanner()
        self.banner.hiding_with_focus.connect(self._on_banner_hiding_with_focus)
        left.addWidget(self.banner)
        self.preview = PreviewWidget()
        left.addWidget(self.preview, 1)
        info = QHBoxLayout()
        self.source_info = ElidedLabel("", hug=True)
        self.source_info.setObjectName("hint")
        # Both give way in a narrow window, the hint more: it kept its whole 358 px and cut
        # "Demo clip (bundled) · 640×360" to "Demo cl…640×360" at the window's least width.
        self.view_hint = tip = ElidedLabel()
        tip.setText(VIEW_HINTS["split"], SHORT_VIEW_HINTS["split"])
        tip.setObjectName("hint")
        tip.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        info.addWidget(self.source_info, 3)
        info.addWidget(tip, 2)
        left.addLayout(info)
        root.addLayout(left, 1)

        self._preview_column = left
        side = Sidebar()
        side.setObjectName("sidebar")
        self.sidebar = side
        lay = QVBoxLayout(side)
        lay.setContentsMargins(SIDEBAR_MARGIN, 18, SIDEBAR_MARGIN, 18)
        lay.setSpacing(8)

        head = QHBoxLayout()
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(40, 40))
        head.addWidget(logo)
        titles = QVBoxLayout()
        titles.setSpacing(0)
        title = QLabel("SharpCam")
        title.setObjectName("title")
        subtitle = QLabel("Motion deblur for video calls")
        subtitle.setObjectName("subtitle")
        titles.addWidget(title)
        titles.addWidget(subtitle)
        head.addLayout(titles, 1)
        lay.addLayout(head)

        camera_heading = _section("CAMERA")
        lay.addWidget(camera_heading)
        # Screen readers announce a picker by its accessible name; without one, by its current
        # entry alone ("Demo clip", "1280×720 · 30 fps"), which does not say what it chooses.
        # Qt's Linux AT-SPI bridge names a combo box by its entry all the same and says what it
        # is for only through a label whose buddy it is: each picker gets one of those too.
        self.camera_combo = QComboBox()
        self.camera_combo.setAccessibleName("Camera")
        # As wide as the sidebar gives it, not as its longest name: the sidebar is as wide as
        # its controls need (_fit_sidebar), and one webcam's 88-character name made it 1,160 px.
        # The list shows the names whole; the tooltip, the chosen one.
        self.camera_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.camera_combo.setMinimumContentsLength(8)
        camera_heading.setBuddy(self.camera_combo)
        for cam in self.cameras:
            self._add_camera_item(cam)
        self.camera_combo.currentIndexChanged.connect(self._camera_tooltip)
        pick = QHBoxLayout()
        pick.addWidget(self.camera_combo, 1)
        self.open_button = QPushButton("Open…")
        self.open_button.setAccessibleName("Open a video or photo")
        self.open_button.setToolTip(
            "Play a video or photo of your own instead of the camera (Ctrl+O, or drop it on "
            "the window)"
        )
        self.open_button.clicked.connect(self.choose_file)
        pick.addWidget(self.open_button)
        lay.addLayout(pick)
        self.save_button = QPushButton("Save sharpened copy…")
        self.save_button.setAccessibleName("Save a sharpened copy of the file")
        self.save_button.setToolTip(SAVE_TIP)
        self.save_button.clicked.connect(self.choose_save_output)
        lay.addWidget(self.save_button)
        self.save_panel = QWidget()
        panel = QVBoxLayout(self.save_panel)
        panel.setContentsMargins(0, 0, 0, 0)
        panel.setSpacing(4)
        self.save_label = ElidedLabel("")
        self.save_label.setObjectName("hint")
        panel.addWidget(self.save_label)
        bar_row = QHBoxLayout()
        self.save_bar = QProgressBar()
        self.save_bar.setAccessibleName("Saving progress")
        bar_row.addWidget(self.save_bar, 1)
        self.save_stop_button = QPushButton("Stop")
        self.save_stop_button.setAccessibleName("Stop saving")
        self.save_stop_button.setToolTip("Stop saving; the frames done so far are kept")
        self.save_stop_button.clicked.connect(self.stop_save)
        bar_row.addWidget(self.save_stop_button)
        panel.addLayout(bar_row)
        self.save_panel.hide()
        lay.addWidget(self.save_panel)
        self.resolution_label = QLabel("Resolution")
        lay.addWidget(self.resolution_label)
        self.resolution_combo = QComboBox()
        self.resolution_combo.setAccessibleName("Camera resolution and frame rate")
        self.resolution_label.setBuddy(self.resolution_combo)
        for res in RESOLUTIONS:
            self.resolution_combo.addItem(res.label, res.key)
        lay.addWidget(self.resolution_combo)

        lay.addWidget(_section("SHARPENING"))
        self.enable_switch = ToggleSwitch("Sharpen video")
        # Not "before/after": Space stops the sharpening in what calls receive too.
        self.enable_switch.setToolTip("Sharpening on or off, also in what calls get (Space)")
        row = QHBoxLayout()
        row.addWidget(self.enable_switch, 1)
        key = QLabel("Space")
        key.setObjectName("hint")
        row.addWidget(key)
        lay.addLayout(row)
        # Said here, where it stays: the banner that says it first can be dismissed, and then
        # only "Running on Passthrough" said that nothing sharpens the video.
        self.model_status = QLabel()
        self.model_status.setObjectName("problem")
        self.model_status.setWordWrap(True)
        self.model_status.hide()
        lay.addWidget(self.model_status)
        self.model_retry_button = QPushButton(RETRY_LABELS["same"])
        self.model_retry_button.clicked.connect(self.retry_sharpening)
        self.model_retry_button.hide()
        lay.addWidget(self.model_retry_button)
        srow = QHBoxLayout()
        self.strength_label = slabel = QLabel("Strength")
        self.strength_value = QLabel("100 %")
        self.strength_value.setObjectName("value")
        srow.addWidget(slabel, 1)
        srow.addWidget(self.strength_value)
        lay.addLayout(srow)
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        # Untied to the "Strength" label above it, a screen reader said a bare number.
        self.strength_slider.setAccessibleName("Sharpening strength")
        slabel.setBuddy(self.strength_slider)
        self.strength_slider.setAccessibleDescription("Percent of the sharpened picture")
        self.strength_slider.setRange(0, 100)
        self.strength_slider.setPageStep(10)
        lay.addWidget(self.strength_slider)
        self.denoise_check = ToggleSwitch("Reduce noise in dim light")
        self.denoise_check.setToolTip(DENOISE_TIP)
        self.denoise_check.setAccessibleDescription(DENOISE_TIP)
        lay.addWidget(self.denoise_check)
        # Whether it is doing anything: in good light it changes nothing, which looked broken.
        self.denoise_status = QLabel()
        self.denoise_status.setObjectName("hint")
        self.denoise_status.setWordWrap(True)
        self.denoise_status.hide()
        lay.addWidget(self.denoise_status)
        self.scale_combo = QComboBox()
        # No label of its own (one would repeat its entries' "Processing:" right above them):
        # its entries say what it sets, also where the entry is all a screen reader says.
        self.scale_combo.setAccessibleName("Processing size")
        self.scale_combo.setToolTip(SCALE_TIP)
        for scale in ("auto", *SCALE_LADDER):
            self.scale_combo.addItem(scale_label(scale), format_scale(scale))
        lay.addWidget(self.scale_combo)
        self.backend_value = QLabel("—")
        self.backend_value.setObjectName("hint")
        self.backend_value.setWordWrap(True)  # "… · int8 · auto 0.75x" is wider than the sidebar
        lay.addWidget(self.backend_value)

        lay.addWidget(_section("PREVIEW"))
        vrow = QHBoxLayout()
        vrow.setSpacing(6)
        self.view_group = QButtonGroup(self)
        self.view_group.setExclusive(True)
        self.view_buttons: dict[str, QPushButton] = {}
        for mode, label in (("split", "Split"), ("side", "Side by side"), ("after", "After")):
            b = QPushButton(label)
            b.setCheckable(True)
            b.setProperty("mode", mode)
            self.view_group.addButton(b)
            self.view_buttons[mode] = b
            vrow.addWidget(b)
        lay.addLayout(vrow)
        self.mirror_check = ToggleSwitch("Mirror preview")
        lay.addWidget(self.mirror_check)
        mirror_hint = QLabel(
            "Only your camera preview is mirrored — others see you unmirrored, and video files "
            "play as recorded."
        )
        mirror_hint.setObjectName("hint")
        mirror_hint.setWordWrap(True)
        lay.addWidget(mirror_hint)

        lay.addWidget(_section("VIRTUAL CAMERA"))
        self.virtual_switch = ToggleSwitch("Send to video calls")
        lay.addWidget(self.virtual_switch)
        self.virtual_status = QLabel("Off")
        self.virtual_status.setObjectName("hint")
        self.virtual_status.setWordWrap(True)
        lay.addWidget(self.virtual_status)
        self.virtual_setup_button = QPushButton("Show setup steps")
        self.virtual_setup_button.setToolTip("How to create the virtual camera on this computer")
        self.virtual_setup_button.clicked.connect(self.show_virtual_setup_steps)
        self.virtual_setup_button.hide()
        lay.addWidget(self.virtual_setup_button)

        lay.addStretch(1)
        foot = QLabel("Ctrl+Q quits · settings are remembered")
        foot.setObjectName("hint")
        foot.setWordWrap(True)  # wider than the sidebar in larger fonts
        lay.addWidget(foot)
        scroll = QScrollArea()
        scroll.setObjectName("sidebarScroll")
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)  # as tall as the window, or taller: then it scrolls
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        # Not a stop of its own in the Tab order (between the preview and the camera picker);
        # Tab to a control below the fold scrolls it into view all the same.
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.sidebar_scroll = scroll
        self._fit_sidebar()  # in the style sheet's font, set already
        root.addWidget(scroll)
        self.setCentralWidget(central)

        sb = self.statusBar()
        sb.setSizeGripEnabled(False)
        self.live_label = QLabel()
        self._set_live("starting")
        # Cut, not clipped, beside the model-failure badge in a narrow window ("dropped" lost
        # its count); the whole line in the tooltip.
        self.stats_label = ElidedLabel("—")
        self.provider_label = QLabel("—")
        self.model_badge = QLabel(
            '<span style="color:#f87171">●</span>&nbsp;Not sharpening: the model failed'
        )
        self.model_badge.setToolTip("See the sidebar to try again")
        self.model_badge.hide()
        sb.addWidget(self.live_label)
        sb.addWidget(self.stats_label, 1)
        sb.addPermanentWidget(self.model_badge)
        sb.addPermanentWidget(self.provider_label)

    def _build_actions(self) -> None:
        self.toggle_action = QAction("Sharpening", self)
        self.toggle_action.setCheckable(True)
        self.toggle_action.setShortcut(QKeySequence(Qt.Key.Key_Space))
        self.toggle_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.toggle_action.toggled.connect(self.enable_switch.setChecked)
        self.addAction(self.toggle_action)
        controls: list[QWidget] = [
            *self.findChildren(QAbstractButton),
            # A picker reached with Tab opens its list with Space, which the shortcut took:
            # sharpening went off instead, and the list could not be opened from the keyboard.
            *self.findChildren(QComboBox),
        ]
        self._takes_space = set(controls)
        for control in controls:
            # A click must not take the focus (Space after it is for sharpening), Tab does:
            # then Space presses the button (opens the picker), the only key that does for a
            # keyboard user.
            control.setFocusPolicy(Qt.FocusPolicy.TabFocus)
            control.installEventFilter(self)
        for control in self.sidebar.findChildren(QWidget):
            if control.focusPolicy() & Qt.FocusPolicy.TabFocus:
                control.installEventFilter(self)  # for its FocusIn; Qt keeps one of each filter
        self.open_action = QAction("Open a video or photo…", self)
        self.open_action.setShortcut(QKeySequence("Ctrl+O"))
        self.open_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.open_action.triggered.connect(self.choose_file)
        self.addAction(self.open_action)
        self.save_action = QAction("Save a sharpened copy…", self)
        self.save_action.setShortcut(QKeySequence("Ctrl+S"))
        self.save_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.save_action.triggered.connect(self.choose_save_output)
        self.addAction(self.save_action)
        self.camera_combo.currentIndexChanged.connect(self._update_save_enabled)
        self._update_save_enabled()
        self.setAcceptDrops(True)
        self.quit_action = QAction("Quit SharpCam", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.quit_action.triggered.connect(self.close)
        self.addAction(self.quit_action)

    def _build_tray(self) -> None:
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        tray = QSystemTrayIcon(app_icon(), self)
        tray.setToolTip("SharpCam")
        menu = QMenu(self)
        menu.addAction(self.toggle_action)
        self.tray_virtual_action = QAction("Virtual camera", self)
        self.tray_virtual_action.setCheckable(True)
        # Built after the remembered choice was applied to the switch: start in its state.
        self.tray_virtual_action.setChecked(self.virtual_switch.isChecked())
        self.tray_virtual_action.toggled.connect(self.virtual_switch.setChecked)
        menu.addAction(self.tray_virtual_action)
        menu.addSeparator()
        show = menu.addAction("Show SharpCam")
        show.triggered.connect(self._raise)
        menu.addAction(self.quit_action)
        tray.setContextMenu(menu)
        tray.activated.connect(
            lambda reason: (
                self._raise() if reason == QSystemTrayIcon.ActivationReason.Trigger else None
            )
        )
        tray.show()
        self.tray = tray

    def _select_initial_source(self, cli_source: str | None) -> None:
        self._absent_source = ""
        wanted = cli_source or self._remembered_source
        choice = self._find_source(wanted) if wanted else None
        idx = self.camera_combo.findData(choice.id) if choice is not None else -1
        if idx < 0:
            # First real camera; the demo clip when there is none. Never a virtual camera: one
            # may be SharpCam's own output (v4l2loopback, or OBS Virtual Camera, listed on
            # Windows even while nothing drives it), and the app would sharpen itself in a loop.
            first = next((c for c in self.cameras if not c.is_virtual), self.cameras[0])
            idx = max(self.camera_combo.findData(first.id), 0)
            if not cli_source:
                # The remembered camera is unplugged today: the stand-in must not replace it
                # in the settings, or the next start would not pick it when it is back.
                self._absent_source = self._remembered_source
        self.camera_combo.setCurrentIndex(idx)
        self._camera_id = self.camera_combo.currentData()
        self._camera_tooltip()  # index 0 picked: no change signal
        self._update_save_enabled()

    def _apply_settings_to_controls(self) -> None:
        s = self.settings
        key = f"{s.resolution}@{s.fps}"
        idx = self.resolution_combo.findData(key)
        self.resolution_combo.setCurrentIndex(max(idx, 0))
        if self.scale_combo.findData(s.scale) < 0:
            # A scale set by hand (settings file) that is not on the ladder is still offered.
            self.scale_combo.addItem(scale_label(float(s.scale)), s.scale)
        self.scale_combo.setCurrentIndex(self.scale_combo.findData(s.scale))
        self.enable_switch.setChecked(s.enabled)
        self.toggle_action.setChecked(s.enabled)
        self.strength_slider.setValue(round(s.strength * 100))
        self._show_after_label()
        self._enable_strength(s.enabled)  # toggled is connected only after this
        self.strength_value.setText(f"{round(s.strength * 100)} %")
        self.denoise_check.setChecked(s.denoise)
        self.view_buttons[s.view_mode].setChecked(True)
        self._set_view_mode(s.view_mode)
        self.preview.set_split(s.split)
        self.mirror_check.setChecked(s.mirror)
        self.preview.set_mirror(s.mirror)
        self._update_resolution_enabled()

        self.camera_combo.currentIndexChanged.connect(self._on_camera_changed)
        self.camera_combo.activated.connect(self._on_camera_activated)
        self.resolution_combo.currentIndexChanged.connect(self._on_source_changed)
        self.scale_combo.currentIndexChanged.connect(self._on_scale_changed)
        self.enable_switch.toggled.connect(self._on_enabled)
        self.strength_slider.valueChanged.connect(self._on_strength)
        self.denoise_check.toggled.connect(self._on_denoise)
        self.view_group.buttonClicked.connect(self._on_view_mode)
        self.mirror_check.toggled.connect(self._on_mirror)
        self.preview.split_changed.connect(self._on_split)
        self.virtual_switch.toggled.connect(self._on_virtual_toggled)
        for changed in (
            self.camera_combo.currentIndexChanged,
            self.resolution_combo.currentIndexChanged,
            self.scale_combo.currentIndexChanged,
            self.enable_switch.toggled,
            self.strength_slider.valueChanged,
            self.denoise_check.toggled,
            self.view_group.buttonClicked,
            self.mirror_check.toggled,
            self.preview.split_changed,
        ):
            changed.connect(self._schedule_save)

    def _connect_bridge(self) -> None:
        b = self.bridge
        b.preview_ready.connect(self._on_preview)
        b.stats_updated.connect(self._on_stats)
        b.message.connect(self.show_message)
        b.message_cleared.connect(self._on_message_cleared)
        b.backend_changed.connect(self._on_backend)
        b.running_changed.connect(self._on_running)
        b.virtual_camera_changed.connect(self._on_virtual_changed)
        # A method of the window, not a lambda: Qt drops the connection when the window is
        # destroyed, and a device closing (or an open returning) later must not reach its
        # deleted widgets, as the bridge outlives it while a driver still answers.
        b.virtual_camera_closing_changed.connect(self._on_virtual_closing_changed)
        b.virtual_camera_missing.connect(self.show_virtual_camera_help)
        b.start_finished.connect(self._on_start_finished)
        b.stream_ended.connect(self._on_stream_ended)
        b.scale_change_failed.connect(self._on_scale_change_failed)

    # --- starting the stream -------------------------------------------------------------------
    def current_camera(self) -> CameraChoice:
        cam_id = self.camera_combo.currentData()
        return next(c for c in self.cameras if c.id == cam_id)

    def current_resolution(self) -> ResolutionChoice:
        """The camera resolution picked (kept while a file plays and the picker shows the
        file's own size instead)."""
        if self.resolution_combo.currentIndex() >= 0:
            self._resolution_key = self.resolution_combo.currentData()
        return next(r for r in RESOLUTIONS if r.key == self._resolution_key)

    def current_scale(self) -> str:
        """The processing scale picked: ``"auto"`` or a number as text (``"0.75"``)."""
        return str(self.scale_combo.currentData())

    def start_stream(self, *, wait: bool = False) -> bool | None:
        """(Re)start the engine with the current picker choices.

        Returns at once (None) while the camera and model open on a worker thread; the window
        stays responsive and :meth:`_on_start_finished` takes over. ``wait=True`` blocks until
        the engine runs and returns True when it does.

        While a camera probe is still listing (:meth:`wait_for_cameras`) and the picker stands
        on the window's own pick, or on a camera, the start waits for the list (the preview
        says "Looking for cameras…", the status "Starting") and runs once it arrives, or after
        ``CAMERA_WAIT_S``; ``wait=True`` waits for the list here, as long at most.
        """
        if self._waits_for_cameras():
            if not wait:
                # A stand-in played until the cameras are listed would show the demo clip for
                # a moment, then restart on the camera; a camera opened now may be busy.
                if self.bridge.is_running or self.bridge.starting:
                    # What played before (a file) must not go on under "Looking for cameras…"
                    # once a camera is picked: a start stops it too.
                    self.bridge.stop(wait=False)
                self._start_deferred = True
                self.preview.clear(LOOKING_FOR_CAMERAS)
                self._set_live("starting")
                if not self._camera_wait.isActive():
                    self._camera_wait.start(round(CAMERA_WAIT_S * 1000))
                return None
            self._start_deferred = False
            probe = self._camera_probe
            found = probe.wait(CAMERA_WAIT_S) if probe is not None else None
            if found is not None:
                self._on_cameras_found(found)
            else:
                self._stop_waiting_for_cameras()
        # This start replaces any that waited (a file picked meanwhile must not be restarted
        # when the list comes).
        self._start_deferred = False
        self._camera_wait.stop()
        cam = self.current_camera()
        res = self.current_resolution()
        if self._refusal is not None:
            # Another camera (or this one, the virtual camera off now) is what opens.
            self._on_message_cleared(self._refusal)
            self._refusal = None
        self.preview.clear(f"Opening {cam.name}…")
        self.preview.set_mirrorable(source_kind(cam.source) == "camera")
        # Files play at their own size; the resolution picker is for cameras.
        size = None if cam.is_demo else res.size
        ok = self.bridge.start(
            cam.source,
            size=size,
            fps=res.fps,
            backend=self.backend,
            model=self.model,
            strength=self.strength_slider.value() / 100.0,
            enabled=self.enable_switch.isChecked(),
            denoise=self.denoise_check.isChecked(),
            loop=cam.is_demo,
            fallback_source=demo_choice().source if self.demo_fallback else None,
            scale=self.current_scale(),
            source_name=cam.name,
            wait=wait,
            stand_in=self._stands_in(),
        )
        if self.bridge.starting:
            # After start(): stopping the previous engine said "Stopped".
            self._set_live("starting")
        return ok

    def _on_start_finished(self, ok: bool) -> None:
        cam = self.current_camera()
        if self.bridge.using_fallback:
            self.preview.set_mirrorable(False)  # the demo clip stands in for the camera
        if self.bridge.source_error is not None:
            self._unopened = cam.id
            self._schedule_save()  # a save made while it opened may have remembered it
        else:
            self._unopened = None
            if self._rememberable(cam):
                self._opened_source = cam.id
        if not ok:
            # No engine was started, so no running_changed comes to end "Starting".
            self._show_no_video("No video. Pick another camera or the demo clip.")
        self._show_virtual_state()  # the demo clip standing in is not sent: the line says so
        self._update_save_enabled()  # nothing to save of a file that did not open
        # A Retry pressed while it started waited for it: the open it brings answers (the
        # bridge tries the device now), or, with nothing to open, this settles it.
        QTimer.singleShot(0, self._settle_virtual_retry)

    def _on_stream_ended(self, msg: UserMessage) -> None:
        # The banner shows the cause (the bridge emitted it); the picture must not stay as if
        # it were live. A file or folder is no camera: "pick the camera again" named none.
        kind = source_kind(self.current_camera().source)
        what = {"video": "the video file", "image": "the image", "folder": "the folder"}
        self._show_no_video(
            f"The video stopped. Pick {what.get(kind, 'the camera')} again above to restart it."
        )

    def _show_no_video(self, placeholder: str) -> None:
        self.preview.clear(placeholder)
        # The previous engine's rate, backend and frame size would pass for a live stream.
        self._on_running(False)

    def shown_source_name(self) -> str:
        """What the preview really shows: the picked camera, or the demo clip standing in."""
        cam = self.current_camera()
        if self._stands_in():
            return f"{cam.name}: the camera used last is not connected"
        if self.bridge.using_fallback:
            return f"{demo_choice().name}: {cam.name} unavailable"
        return cam.name

    def _stands_in(self) -> bool:
        """The demo clip is picked in place of the remembered camera, not plugged in today.

        Nobody chose it: it plays in the window but is not sent to calls (the people in the
        call saw the bundled clip instead of the person), and the camera, once plugged in, is
        picked again (:meth:`set_cameras`). Another real camera picked in its place is sent.
        """
        return bool(self._absent_source) and self.current_camera().is_demo

    # --- slots: controls -> bridge -------------------------------------------------------------
    def _on_camera_changed(self) -> None:
        cam = self.current_camera()
        if self._refuse_own_output(cam):
            return
        self._camera_id = cam.id
        self._demo_picked = cam.id == DEMO_ID
        self._absent_source = ""  # the person's choice is remembered from now on
        self._auto_pick = False  # and a camera list found later does not change it
        self._on_source_changed()

    def _on_source_changed(self) -> None:
        self._update_resolution_enabled()
        self.start_stream()

    def _on_camera_activated(self, index: int) -> None:
        # Picking the camera already shown does not change the index, so nothing restarted:
        # after the stream ended, or with the demo clip standing in for a camera that failed to
        # open, that is how a person retries it (the messages say so).
        if self.bridge.starting or index != self.camera_combo.currentIndex():
            return  # a new pick restarts through currentIndexChanged
        if not self.bridge.is_running or self.bridge.using_fallback:
            # The person's pick, as one of another entry is: the demo clip picked on purpose
            # while it stood in for the remembered camera restarted as the stand-in still,
            # never sent to calls.
            self._on_camera_changed()

    def _refuse_own_output(self, cam: CameraChoice) -> bool:
        """Refuse ``cam`` when it is the virtual camera device SharpCam sends to now: the engine
        would read its own output and sharpen it again, in a loop (and a v4l2loopback device
        read while written gives back what was written a moment ago). The picker goes back to
        the camera in use, which plays on, and the banner says why and what to do instead.
        A virtual camera SharpCam does not send to (another app's output) opens as any."""
        # Also while a restart holds the device open (it is sent its last frame meanwhile).
        device = self.bridge.virtual_camera_device
        if not reads_virtual_device(cam.source, cam.name, device):
            return False
        self.camera_combo.blockSignals(True)
        self.camera_combo.setCurrentIndex(max(self.camera_combo.findData(self._camera_id), 0))
        self.camera_combo.blockSignals(False)
        self._update_save_enabled()
        if self._refusal is not None:
            # Replaced, not kept under the new one: only the newest is taken down at a start.
            self._on_message_cleared(self._refusal)
        self._refusal = UserMessage(
            "camera",
            f"{cam.name} was not opened: it is the virtual camera SharpCam sends its video to.",
            "Reading it would show SharpCam its own picture in a loop; the video stays as it "
            "was. Pick your real camera, or turn “Send to video calls” off first to read that "
            "virtual camera.",
        )
        self.show_message(self._refusal)
        return True

    def _on_scale_changed(self) -> None:
        # Not a restart: the bridge builds the model at the new size on a worker thread and
        # swaps it into the running engine, so the camera stays open (a reopen is seconds
        # without video in a call) and the virtual camera does not blink. Without video it is
        # only remembered: start_stream passes it to the next start.
        self.bridge.set_scale(self.current_scale())

    def _on_scale_change_failed(self, scale: float | str) -> None:
        # The model did not load at the size picked (the banner says why) and the stream runs
        # on at the one before: the picker must show that one, and remember it.
        idx = self.scale_combo.findData(format_scale(scale))
        if idx < 0 or idx == self.scale_combo.currentIndex():
            return
        self.scale_combo.blockSignals(True)
        self.scale_combo.setCurrentIndex(idx)
        self.scale_combo.blockSignals(False)
        self._schedule_save()

    def _update_resolution_enabled(self) -> None:
        """The picker is for cameras: while a file plays it shows no camera mode, greyed (a
        greyed "720p · 30 fps" over a 640×360 file read as the format playing), but the
        file's own size once its first frame came, and a folder's photo's as it shows (see
        :meth:`_show_source_format`)."""
        is_file = self.current_camera().is_demo
        combo = self.resolution_combo
        key = self.current_resolution().key  # kept for the next camera and the settings
        combo.blockSignals(True)  # neither hides nor shows a mode restart anything
        if is_file:
            combo.setPlaceholderText("The file's own size")
            combo.setCurrentIndex(-1)
        elif combo.currentIndex() < 0:
            combo.setCurrentIndex(combo.findData(key))
        combo.blockSignals(False)
        combo.setEnabled(not is_file)
        combo.setToolTip("Video files play at their own size and rate" if is_file else "")

    def _on_enabled(self, on: bool) -> None:
        self.bridge.set_enabled(on)
        self._show_after_label()
        self.toggle_action.setChecked(on)
        self._enable_strength(on)
        self._show_denoise_state(None)  # off: none; on: measured anew, said at the next stats

    def _enable_strength(self, on: bool) -> None:
        # Its labels too: the value stayed bright beside a greyed slider, as if it applied.
        # A failed model sharpens nothing, so a strength would not apply either.
        failure = self.bridge.model_failure
        failed = failure is not None
        # Nor a processing size, for a model that did not load: a size picked loaded it again,
        # which failed the same way and said so in a second red banner. One that failed while
        # running may work again at another size (its banner offers that).
        sizes = failure is None or failure.loaded
        for widget, usable in (
            (self.strength_slider, on and not failed),
            (self.denoise_check, on and not failed),
            (self.scale_combo, sizes),
        ):
            if not usable and widget.hasFocus():
                # Disabled with the focus (a click gives the slider that), Qt passes it on to
                # the next control, the processing-size picker (or a view button), whose Space
                # opened its list instead of turning sharpening back on. To the sharpening
                # switch: Space presses it (sharpening back on), a screen reader says its new
                # state, and Tab goes on from there; cleared, the focus was nowhere, nothing was
                # said, and the next Tab started over at the preview.
                self.enable_switch.setFocus(Qt.FocusReason.OtherFocusReason)
        # Noise is reduced on the way to the model: off with it.
        for widget in (
            self.strength_slider,
            self.strength_label,
            self.strength_value,
            self.denoise_check,
        ):
            widget.setEnabled(on and not failed)
        self.strength_slider.setToolTip(
            "Nothing is sharpened while the model has failed" if on and failed else ""
        )
        self.scale_combo.setEnabled(sizes)
        self.scale_combo.setToolTip(SCALE_TIP)
        if failure is not None and not sizes:
            retry = RETRY_LABELS.get(failure.retry, RETRY_LABELS["same"])
            self.scale_combo.setToolTip(
                f"The model could not be loaded, so it runs at no size: “{retry}” above "
                "loads it again"
            )

    def _show_after_label(self) -> None:
        """The processed side's badge says what it shows: not "AFTER" over a picture nothing
        sharpened (sharpening turned off, the model failed, or a strength of 0 %)."""
        # The short names where the picture is too narrow for the whole one (a portrait
        # source side by side, the split at the least width).
        if not self.enable_switch.isChecked():
            self.preview.set_after_label("SHARPENING OFF", "OFF")
        elif self.bridge.model_failure is not None:
            self.preview.set_after_label("NOT SHARPENED", "OFF")
        elif self.strength_slider.value() == 0:
            # The engine passes frames through at 0 %: the same picture on both sides.
            self.preview.set_after_label("STRENGTH 0 %", "0 %")
        else:
            self.preview.set_after_label(AFTER_LABEL, AFTER_SHORT)

    def _show_model_state(self) -> None:
        """Say where it stays (the sidebar and the status bar) that the model failed and
        nothing sharpens the video, with the retry the banner's advice names."""
        failure = self.bridge.model_failure
        if failure == self._model_failure_shown:
            return  # every stats poll asks: the labels change only with the state
        self._model_failure_shown = failure
        failed = failure is not None
        if failure is not None:
            what = "stopped working" if failure.loaded else "could not be loaded"
            self.model_status.setText(
                f"<b>Not sharpening:</b> the model {what}, so the video (also what calls get) "
                "is sent unsharpened."
            )
            self.model_status.setToolTip(f"{failure.message.text}\n\n{failure.message.advice}")
            self.model_retry_button.setText(RETRY_LABELS.get(failure.retry, RETRY_LABELS["same"]))
            self.model_badge.setToolTip(failure.message.text)
        elif self.model_retry_button.hasFocus():
            # Hidden with the focus (Space pressed it, and the restart began), Qt passed it on
            # to the next control that takes it, the processing-size picker, whose list the
            # next Space opened. The switch above it takes Space for sharpening still.
            self.enable_switch.setFocus(Qt.FocusReason.OtherFocusReason)
        for widget in (self.model_status, self.model_retry_button, self.model_badge):
            widget.setVisible(failed)
        self._update_save_enabled()
        self._enable_strength(self.enable_switch.isChecked())
        self._show_after_label()

    def retry_sharpening(self) -> None:
        """Load the model again (the sidebar's button): the stream restarts, with the backend
        picked automatically or SharpCam's own weights where that is what the advice named."""
        failure = self.bridge.model_failure
        if failure is None:
            return
        if failure.retry == "auto":
            if self.settings.backend == self.backend:
                # The remembered backend is what failed: the next launch must not fail the same.
                self.settings.backend = "auto"
                self._schedule_save()
            self.backend = "auto"
        elif failure.retry == "own_weights":
            self.model = None
        self.start_stream()

    def _on_strength(self, value: int) -> None:
        self.strength_value.setText(f"{value} %")
        self.bridge.set_strength(value / 100.0)
        self._show_after_label()

    def _on_view_mode(self, button: QPushButton) -> None:
        self._set_view_mode(str(button.property("mode")))

    def _set_view_mode(self, mode: str) -> None:
        refocus = any(b.hasFocus() for b in self.view_buttons.values())
        for key, button in self.view_buttons.items():
            # One Tab stop for the three, the mode shown, as in a group of radio buttons. Qt
            # keeps the stop on the button that last had the focus: after a click on "After"
            # Tab reached "Split", and Space there left the mode picked.
            button.setFocusPolicy(
                Qt.FocusPolicy.TabFocus if key == mode else Qt.FocusPolicy.NoFocus
            )
        if refocus:
            self.view_buttons[mode].setFocus(Qt.FocusReason.TabFocusReason)
        self.preview.set_mode(mode)
        # The divider's keys are offered only where there is a divider.
        key = mode if mode in VIEW_HINTS else "after"
        self.view_hint.setText(VIEW_HINTS[key], SHORT_VIEW_HINTS[key])

    def _on_mirror(self, on: bool) -> None:
        self.preview.set_mirror(on)

    def _on_split(self, fraction: float) -> None:
        self.settings.split = fraction

    def _on_virtual_toggled(self, on: bool) -> None:
        self._set_virtual(on)

    def _set_virtual(self, on: bool) -> None:
        """The person turns the virtual camera on or off (switch, tray, the setup's Retry)."""
        self._virtual_asking = False  # answered
        self._virtual_by_person = True
        try:
            self.bridge.set_virtual_camera(on)
        finally:
            self._virtual_by_person = False
        # As the switch shows it now: off after a turn-on that found no virtual camera. The
        # device opens on a worker thread: how that ends updates it too (_on_virtual_changed).
        self._virtual_pref = self.bridge.virtual_camera_wanted
        self._schedule_save()

    def _on_virtual_dialog_rejected(self) -> None:
        # The window's own closing closes the dialog too: that is no answer (saved before).
        if self._virtual_asking and not self._closing:
            self._virtual_asking = False
            self._virtual_pref = self.bridge.virtual_camera_wanted
            self._schedule_save()

    # --- slots: bridge -> views ----------------------------------------------------------------
    def _on_preview(self) -> None:
        pair = self.bridge.take_preview()
        if pair is not None:
            size = (pair[1].width(), pair[1].height())
            # Said again when it changes: a folder's photos differ in size, and the line and
            # the picker kept the first one's while larger or smaller ones showed.
            if not self.preview.has_frame() or size != self._format_size:
                self._show_source_format(*size)
            self.preview.set_frames(*pair)

    def _show_source_format(self, w: int, h: int) -> None:
        """Say what the source really delivers (first frame of a start, and each frame of
        another size): a camera picks its nearest mode, and the picker must not pass for what
        it gave."""
        self._format_size = (w, h)
        info = f"{self.shown_source_name()} · {w}×{h}"
        fps = self.bridge.source_fps
        if self.current_camera().is_demo or self.bridge.using_fallback:
            # A file plays at its own size and rate: the picker, for cameras, shows that. A
            # still has no rate (30 fps was the engine's repeat), and the demo clip standing in
            # for a source that failed shows its own format, not that source's.
            still = self.bridge.reading == "image"
            rate = f" · {fps:.3g} fps" if fps and not still else ""
            whose = "the demo clip's" if self.bridge.using_fallback else "the file's own"
            self.resolution_combo.setPlaceholderText(f"{w}×{h}{rate} ({whose})")
            if not self.current_camera().is_demo:
                # A camera that failed keeps its mode picked (a new pick retries it), so the
                # placeholder never shows: "720p · 30 fps" stood over the demo clip's 640×360.
                self.resolution_combo.setToolTip(
                    f"The demo clip plays at its own {w}×{h}{rate} while "
                    f"{self.current_camera().name} is unavailable; "
                    f"{self.current_resolution().label} applies once it opens."
                )
            self.source_info.setText(info)
            return
        res = self.current_resolution()
        (rw, rh), tips = res.size, []
        if (w, h) != (rw, rh):
            info += f" (not {rw}×{rh}: the camera's nearest)"
            tips.append(f"The camera does not offer {rw}×{rh}; it sends {w}×{h}.")
        if fps and abs(fps - res.fps) > 0.05 * res.fps:
            # "720p · 60 fps" over a 30 fps stream read as SharpCam being too slow.
            info += f" · {fps:.3g} fps (not {res.fps}: the camera's nearest)"
            tips.append(f"The camera does not offer {res.fps} fps here; it sends {fps:.3g}.")
        self.resolution_combo.setToolTip(" ".join(tips))
        self.source_info.setText(info)

    def _on_stats(self, stats: Any) -> None:
        self._last_stats = stats
        self.stats_label.setText(format_stats(stats))
        self._show_denoise_state(
            getattr(stats, "noise", None), getattr(stats, "colour_noise", None)
        )
        # The engine ends on its own when a source fails for good (camera gone for good).
        self._set_live("live" if getattr(stats, "running", True) else "stopped")
        self._show_model_state()  # a model that failed while running says so in the stats

    def _on_denoise(self, on: bool) -> None:
        self.bridge.set_denoise(on)
        # At once, not at the next stats: off, the hint goes; on, the engine measures anew.
        self._show_denoise_state(None)

    def _show_denoise_state(self, noise: float | None, colour: float | None = None) -> None:
        text = ""
        on = self.denoise_check.isChecked()
        # Not under a greyed-out switch (sharpening off): a reading taken before, arriving after.
        if noise is not None and on and self.denoise_check.isEnabled():
            if noise >= DENOISE_MIN_SIGMA:
                speckle = denoise_colour_blur(colour, noise) > 0.0
                also = " and colour noise" if speckle else ""
                text = f"Reducing grain{also} (noise level {noise:.1f})"
            else:
                text = "No grain to reduce: the picture passes as it is"
        # Off by default, the switch is found when it would help: a grainy picture says so. Once
        # said, it stays until the grain is under the switch's own threshold, not flickering
        # with the readings around the level that said it.
        self._suggesting_denoise = bool(
            noise is not None
            and not on
            and self.denoise_check.isEnabled()
            and denoise_worth_telling(noise, told=self._suggesting_denoise)
        )
        if self._suggesting_denoise:
            text = f"Grainy picture (noise level {noise:.1f}): turn this on to reduce it"
        self.denoise_status.setText(text)
        self.denoise_status.setVisible(bool(text))

    def _on_backend(self, label: str) -> None:
        self.backend_value.setText(f"Running on {label}")
        self.provider_label.setText(label)
        self._show_model_state()

    def _on_running(self, running: bool) -> None:
        self._set_live("live" if running else "stopped")
        self._show_model_state()
        if not running:
            self._show_denoise_state(None)  # the next stream measures its own noise
            # A restart (another camera or resolution) takes a while: "Starting"
            # beside the stopped engine's rate and backend passed them off as the new one's,
            # and its source and frame size under "Opening <the other camera>…" as well.
            self.stats_label.setText("—")
            self.backend_value.setText("—")
            self.provider_label.setText("—")
            self.source_info.setText("")

    def _set_live(self, state: str) -> None:
        color, text = {
            "live": ("#22c55e", "Live"),
            "starting": ("#f59e0b", "Starting"),
            "stopped": ("#64748b", "Stopped"),
        }[state]
        self.live_label.setText(f'<span style="color:{color}">●</span>&nbsp;{text}')
        self.live_state = state

    def _on_virtual_changed(self, on: bool, device: str) -> None:
        self._virtual_shown = (on, device)
        if on:
            self._virtual_guidance = None  # there is one now: no steps to offer
            if self._virtual_retrying:
                self._virtual_retrying = False
                # The dialog closes (below): the status bar says what the Retry found.
                self.statusBar().showMessage(
                    f"Virtual camera found: sending to {self._elided_device(device)}", 8000
                )
        elif self._virtual_retrying and not self.bridge.virtual_camera_opening:
            # Its answer (the steps again, or a message) follows in this same slot of the
            # bridge; one that says nothing more is settled once it has run.
            QTimer.singleShot(0, self._settle_virtual_retry)
        if (
            self.bridge.answering_turn_on or self.bridge.refusing_loop
        ) and self._virtual_pref != self.bridge.virtual_camera_wanted:
            # The person's turn-on ended off (no device, or the camera being read): remembered
            # as the switch shows it, as when the device opened inside the turn-on. So is a
            # launch's turn-on refused for the loop: the message says it is off until turned
            # on again, and the next launch sent the camera picked since to calls unasked.
            self._virtual_pref = self.bridge.virtual_camera_wanted
            self._schedule_save()
        self._show_virtual_state()

    def _on_virtual_closing_changed(self, _closing: bool) -> None:
        self._show_virtual_state()

    def _show_virtual_state(self) -> None:
        """The switch says what is wanted, the line under it what really happens."""
        on, device = self._virtual_shown
        wanted = on or self.bridge.virtual_camera_wanted
        self.virtual_switch.blockSignals(True)
        self.virtual_switch.setChecked(wanted)
        self.virtual_switch.blockSignals(False)
        if getattr(self, "tray_virtual_action", None) is not None:
            self.tray_virtual_action.blockSignals(True)
            self.tray_virtual_action.setChecked(wanted)
            self.tray_virtual_action.blockSignals(False)
        self.virtual_status.setToolTip("")
        if on:
            # A device name without spaces cannot wrap and ran off the fixed-width sidebar:
            # shortened to one line there, in full in the tooltip.
            size = self.bridge.virtual_camera_size
            shown = f" · {size[0]}×{size[1]}" if size else ""
            self.virtual_status.setText(
                # Joined, so a long name moves to a line of its own whole: the wrap broke it
                # at a "-" or "/", two lines for a name shortened to fit one.
                f"On · sending to <b>{_html(_WORD_JOINER.join(self._elided_device(device)))}"
                f"</b>{shown}<br>"
                "Pick it as the camera in Zoom, Teams or Meet."
            )
            self.virtual_status.setToolTip(device)
            if self.virtual_dialog is not None:
                self.virtual_dialog.accept()
        elif self.bridge.virtual_camera_opening:
            # A driver that takes its time (or hangs) must not pass for "waiting for video".
            self.virtual_status.setText("On · opening the virtual camera…")
        elif self.bridge.virtual_camera_held:
            # "Nothing is sent" was untrue: calls keep the device, frozen, until the video is back.
            self.virtual_status.setText(
                "On · restarting the video; calls see its last picture meanwhile."
            )
        elif wanted and self._stands_in() and self.bridge.is_running:
            self.virtual_status.setText(
                "On · not sending: the camera used last is not connected. The demo clip plays "
                "only here; calls get video once it is plugged in (or another camera is picked)."
            )
        elif wanted and self.bridge.using_fallback and self.bridge.is_running:
            # The demo clip stands in for the camera only in this window: a call must not show
            # the bundled clip in place of the person.
            # A broken file never opens: "once the camera opens" sent the person waiting.
            is_file = source_kind(self.current_camera().source) != "camera"
            then = "another file or a camera is picked" if is_file else "the camera opens"
            self.virtual_status.setText(
                f"On · not sending: {_html(self.current_camera().name)} did not open. The demo "
                f"clip plays only here; calls get video once {then}."
            )
        elif wanted:
            # A start opening, no video, or the video stopped: calls get nothing until it runs.
            self.virtual_status.setText("On · waiting for video; nothing is sent until it plays.")
        elif self.bridge.virtual_camera_closing:
            # Turned off, but the device is still open until its driver answers: video calls
            # may still list it (and show its last frame).
            self.virtual_status.setText("Turning off · waiting for the virtual camera to close…")
        elif self._virtual_guidance is not None:
            self.virtual_status.setText(
                "Off · the virtual camera is in use by another program."
                if self.bridge.virtual_camera_busy
                else "Off · no virtual camera found on this computer."
            )
        else:
            self.virtual_status.setText("Off")
        self.virtual_setup_button.setVisible(self._virtual_guidance is not None and not on)

    def _elided_device(self, device: str) -> str:
        """``device`` shortened in the middle (names differ at either end) to one line of the
        sidebar, in the bold it is shown in."""
        self.virtual_status.ensurePolished()  # the style sheet's font, also before the show
        font = QFont(self.virtual_status.font())
        font.setBold(True)
        # 2: the sidebar's border, and rounding
        width = self.sidebar.minimumWidth() - 2 * SIDEBAR_MARGIN - 2
        return QFontMetrics(font).elidedText(device, Qt.TextElideMode.ElideMiddle, width)

    def show_message(self, msg: UserMessage) -> None:
        """Show an error or warning in the window; nothing stops."""
        self.banner.show_message(msg)
        if self._virtual_retrying and msg.kind == "virtual_camera":
            # The Retry's answer: not a missing device, another reason (said in the banner).
            self._virtual_retrying = False
            if self.virtual_dialog is not None:
                self.virtual_dialog.say_result(f"Not turned on: {msg.text}")

    def _on_message_cleared(self, msg: UserMessage) -> None:
        self.banner.take_down(msg)

    def show_virtual_camera_help(self, guidance: str) -> VirtualCameraDialog:
        """Show (non-modally) the virtual-camera setup steps with a Retry button."""
        by_person = self._virtual_by_person or self.bridge.answering_turn_on
        if not by_person and self._virtual_pref:
            self._virtual_asking = True  # an open they did not ask for just now
        self._virtual_guidance = guidance
        busy = bool(self.bridge.virtual_camera_busy)
        dialog = self._virtual_setup_dialog()
        if self._virtual_retrying:
            self._virtual_retrying = False
            dialog.say_result(
                f"Still {'in use' if busy else 'not found'} (tried again at "
                f"{time.strftime('%H:%M:%S')}). Follow the steps above, then press Retry again."
            )
        dialog.set_guidance(guidance, remembered=self._virtual_asking, busy=busy)
        dialog.show()
        dialog.raise_()
        self._show_virtual_state()
        return dialog

    def show_virtual_setup_steps(self) -> VirtualCameraDialog | None:
        """Show the setup steps again (the sidebar's button, while no virtual camera could be
        found); None when there are none to show."""
        if self._virtual_guidance is None:
            return None
        dialog = self._virtual_setup_dialog()
        if not dialog.isVisible():
            dialog.say_result("")  # a Retry's answer from before is not news
            dialog.set_guidance(
                self._virtual_guidance,
                remembered=self._virtual_asking,
                busy=bool(self.bridge.virtual_camera_busy),
            )
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
        return dialog

    def _virtual_setup_dialog(self) -> VirtualCameraDialog:
        if self.virtual_dialog is None:
            self.virtual_dialog = VirtualCameraDialog(self)
            self.virtual_dialog.retry_requested.connect(self._retry_virtual)
            self.virtual_dialog.rejected.connect(self._on_virtual_dialog_rejected)
            self.virtual_dialog.finished.connect(self._on_virtual_dialog_finished)
        return self.virtual_dialog

    def _retry_virtual(self) -> None:
        """The setup dialog's Retry: turn the virtual camera on, and say there what came of it
        (the device opens on a worker thread: the answer may come later)."""
        dialog = self.virtual_dialog
        if dialog is None:
            return
        self._virtual_retrying = True
        dialog.show_trying()
        self._set_virtual(True)
        if self._virtual_retrying and not self.bridge.virtual_camera_opening:
            self._settle_virtual_retry()

    def _settle_virtual_retry(self) -> None:
        """Say what a Retry came to where no device opened and nothing else said why."""
        if not self._virtual_retrying or self.bridge.virtual_camera_opening:
            return
        if self.bridge.starting:
            # A restart under way: the device is tried once it runs (_on_start_finished
            # settles it then). Settled now, "no video plays" was said of a video about to
            # play, and the real answer that followed never reached the dialog.
            return
        self._virtual_retrying = False
        if self.virtual_dialog is None:
            return
        if self.bridge.virtual_camera_wanted and not self.bridge.is_running:
            self.virtual_dialog.say_result(
                "No video plays now: SharpCam tries the virtual camera again once it does."
            )
        else:
            self.virtual_dialog.say_result("The virtual camera is still off.")

    def _on_virtual_dialog_finished(self, _result: int) -> None:
        # Closed (or it found the device): a Retry's late answer is for the sidebar alone, and
        # the dialog opened again later starts with no answer of old.
        self._virtual_retrying = False
        if self.virtual_dialog is not None:
            self.virtual_dialog.say_result("")

    def _raise(self) -> None:
        # Out of the taskbar only: showNormal() also un-maximised a maximised (or full-screen)
        # window; one minimised from maximised comes back maximised.
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.show()
        self.raise_()
        self.activateWindow()

    # --- closing -------------------------------------------------------------------------------
    def collect_settings(self) -> AppSettings:
        s = self.settings
        cam = self.current_camera()
        res = self.current_resolution()
        # A one-off file from the command line is not remembered as the camera.
        if self._cameras_pending and self._auto_pick:
            # The stand-in until the cameras are listed is nobody's choice.
            s.source = self._remembered_source
        elif self._absent_source:
            s.source = self._absent_source
        elif self._rememberable(cam):
            s.source = self._opened_source if cam.id == self._unopened else cam.id
        s.resolution = f"{res.size[0]}x{res.size[1]}"
        s.fps = res.fps
        s.enabled = self.enable_switch.isChecked()
        s.strength = self.strength_slider.value() / 100.0
        s.denoise = self.denoise_check.isChecked()
        s.scale = self.current_scale()
        s.view_mode = self.preview.mode
        s.split = self.preview.split
        s.mirror = self.mirror_check.isChecked()
        s.virtual_camera = self._virtual_pref
        s.geometry = bytes(self.saveGeometry().data())
        return s

    def _rememberable(self, cam: CameraChoice) -> bool:
        if cam.id == DEMO_ID:
            return self._demo_picked
        return cam.id in {c.id for c in self.cameras if not c.is_demo}

    def _schedule_save(self, *_: object) -> None:
        if not self._closing:
            self._save_timer.start()  # restarted: written once the changes pause

    def save_now(self) -> bool:
        """Write every choice to the settings store now; False when that failed. The window
        goes on either way, and says so once until a save works again (the next change tries
        again): a full disk or a folder that cannot be written must not end a call."""
        self._save_timer.stop()
        try:
            wanted = replace(self.collect_settings())
            ok = save_settings(self.store, wanted, changed_from=self._stored)
            if ok:
                self._stored = wanted
        except Exception:  # nothing that goes wrong in a save may take the window down
            log.exception("saving the settings failed")
            ok = False
        if ok:
            self._save_logged = None
            if self._save_problem is not None:
                self._on_message_cleared(self._save_problem)
                self._save_problem = None
            return True
        where = self.store.fileName()
        try:
            reason = unsaved_reason(self.store)
        except Exception:  # a probe of the disk is no more allowed to take the window down
            log.exception("finding why the settings could not be saved failed")
            reason = ""
        where_why = f"{where} ({reason})" if reason else where
        if where_why != self._save_logged:
            # Once: each change saved (a slider dragged, the window moved) repeated the line.
            log.warning("the settings could not be saved to %s", where_why)
            self._save_logged = where_why
        if self._save_problem is None and not self._closing:
            self._save_problem = UserMessage(
                "settings",
                f"Your settings could not be saved to {where_why}.",
                "SharpCam keeps running with them, but will have forgotten them at the next "
                "start. Check that the folder can be written and the disk has room; SharpCam "
                "tries again at your next change.",
            )
            self.show_message(self._save_problem)
        return False

    # --- saving a sharpened copy -----------------------------------------------------------------
    def _update_save_enabled(self) -> None:
        # A file (the bundled clip too) has a copy to save; a camera has none, and one save
        # runs at a time (two would halve each other's CPU and the live video's).
        idle = self.save_job is None or not self.save_job.running()
        picked = next((c for c in self.cameras if c.id == self.camera_combo.currentData()), None)
        # The copy runs the model the live video does: while that one fails, every copy
        # failed (or would have been the unsharpened input).
        model_ok = self.bridge.model_failure is None
        # A file that did not open: its save always failed ("cannot open video file").
        opened = not self.bridge.using_fallback
        on = idle and picked is not None and picked.is_demo and model_ok and opened
        self.save_button.setEnabled(on)
        self.save_action.setEnabled(on)
        tip = SAVE_TIP if opened else SAVE_UNOPENED_TIP
        self.save_button.setToolTip(tip if model_ok else SAVE_NO_MODEL_TIP)

    def choose_save_output(self) -> None:
        """Ask where the sharpened copy of the file playing goes (a file dialog that proposes
        ``NAME.sharp.EXT`` beside it), then :meth:`save_copy` it."""
        self._update_save_enabled()  # the picker may have moved with its signals held
        if not self.save_button.isEnabled():
            return  # Ctrl+S while a camera plays, or while a save runs
        source = self.current_camera().source
        proposed = default_output(source)
        if source_kind(source) == "folder":
            # A new folder's name, proposed (`process` makes it): a folder dialog started at
            # the parent wrote the copies loose there, beside the originals' folder.
            output, _ = QFileDialog.getSaveFileName(
                self,
                "Save sharpened copies of the photos into a new folder",
                proposed,
                "Folder (*)",
            )
        else:
            offered = save_filter(source)
            while True:
                output, _ = QFileDialog.getSaveFileName(
                    self, "Save a sharpened copy", proposed, offered
                )
                if not output or f"*{Path(output).suffix.lower()} " in offered.replace(")", " "):
                    break
                # Typed without one, or with a dot of its own ("Meeting 10.30"): `process`
                # takes the format from the name, and refused that one.
                output += Path(proposed).suffix
                # The dialog asked about the name as typed ("talk"): the one with the
                # extension ("talk.mp4") was replaced without a word.
                if not os.path.lexists(output) or self._ask_replace(output):
                    break
                proposed = output
        if output:
            self.save_copy(output)

    def _ask_replace(self, path: str) -> bool:
        """Whether to replace the file at ``path`` (asked as the save dialog asks)."""
        where = f"{Path(path).name} already exists in {Path(path).parent}. Replace it?"
        return self._ask("Replace the file?", where)

    def _ask(self, title: str, text: str) -> bool:
        """A Yes/No question, No by default; whether the answer was Yes."""
        answer = QMessageBox.question(
            self,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def save_copy(self, output: str, source: str | None = None) -> SaveJob:
        """Save a sharpened copy of ``source`` (default: the file playing) to ``output`` with
        the model and strength in use, in the background: ``sharpcam process`` in a child
        process below normal priority, so the live video (and a call fed by it) goes on. The
        sidebar shows its progress and a Stop button; the banner says how it ended."""
        if self.save_job is not None and self.save_job.running():
            raise RuntimeError("a sharpened copy is being saved already")
        source = source if source is not None else self.current_camera().source
        if self._save_said is not None:
            self.banner.take_down(self._save_said)
            self._save_said = None
        if self.save_job is not None:
            self.save_job.deleteLater()  # ended: its child process object goes with it
        job = SaveJob(
            os.path.abspath(source),
            os.path.abspath(output),
            backend=self.backend,
            model=self.model,
            strength=self.strength_slider.value() / 100,
            denoise=self.denoise_check.isChecked(),
            parent=self,
        )
        job.progress.connect(self._on_save_progress)
        job.finished.connect(self._on_save_finished)
        self.save_job = job
        # What its progress counts: a photo and a folder's are photos, as `process` counts
        # them images ("3 of 10 frames" was said of a folder's, "1 frame" of a photo).
        self._save_noun = "photo" if source_kind(job.source) in ("folder", "image") else "frame"
        self.save_label.setText(f"Saving {Path(output).name}…")
        self.save_bar.setRange(0, 0)  # busy until the first count
        self.save_stop_button.setEnabled(True)
        self.save_panel.show()
        self._update_save_enabled()
        job.start()
        return job

    def stop_save(self) -> None:
        """Stop the save under way; its frames so far are kept (the banner says where)."""
        if self.save_job is not None and self.save_job.running():
            self.save_stop_button.setEnabled(False)
            self.save_label.setText("Stopping…")
            self.save_job.stop()

    def close_without_asking(self) -> bool:
        """Close as :meth:`close` does, but stop a save under way without asking (its frames so
        far kept): for a logout, ``kill`` or Ctrl+C in the terminal, which wait for no answer."""
        self._close_without_asking = True
        try:
            return self.close()
        finally:
            self._close_without_asking = False

    def ask_stop_save(self) -> bool:
        """Whether to stop the save under way and quit (asked when the window closes)."""
        job = self.save_job
        done = ""
        kind = source_kind(job.source) if job is not None else "video"
        # A photo's and a folder's are photos, as the progress line says ("3 of 10 frames" was
        # asked of them).
        noun = "photos" if kind in ("folder", "image") else "frames"
        if job is not None and job.total and job.done <= job.total:
            done = f" ({job.done} of {job.total} {noun})"
        elif job is not None and job.done:
            done = f" ({job.done} {noun if job.done != 1 else noun[:-1]} so far)"
        kept = "The frames done so far are kept."
        if job is not None:
            # Where, since the window that would say it once stopped is going away.
            out = Path(job.output)
            if kind == "folder":
                kept = f"The photos done so far are kept in {out.name}."
            elif kind == "image":
                kept = "Nothing is kept of a photo not finished."
            else:
                free = free_incomplete_path(out)
                if free is not None:
                    kept = f"The frames done so far are kept, as {free.name} beside it."
        return self._ask(
            "SharpCam", f"A sharpened copy is being saved{done}. Stop it and quit? {kept}"
        )

    def _on_save_progress(self, done: int, total: int) -> None:
        job = self.save_job
        name = Path(job.output).name if job is not None else ""
        noun = self._save_noun
        if total > 0:
            self.save_bar.setRange(0, total)
            self.save_bar.setValue(min(done, total))
            # Past the count the file announced (an estimate: a variable-rate clip's), that
            # count is wrong: "30 of 29 frames" was said, and on a long clip "250 of 29".
            counted = f"{done} of {total} {noun}s" if done <= total else f"{done} {noun}s"
        else:
            self.save_bar.setRange(0, 0)  # busy: the file does not say how many there are
            counted = f"{done} {noun}{'' if done == 1 else 's'}"
        if job is not None and not job.stopping:
            self.save_label.setText(f"Saving {name}… {counted}")
        # What a screen reader says of a busy bar, which has no value of its own.
        self.save_bar.setAccessibleDescription(counted)

    def _on_save_finished(self, result: SaveResult) -> None:
        self.save_panel.hide()
        self._update_save_enabled()
        kind, headline, details = describe_result(result)
        job = self.save_job
        if job is not None and kind != "save_failed":
            # What it was made with: the controls may have moved since (the copy keeps the
            # settings it started with), and the advice to turn noise reduction on and save
            # again read the same with the switch on.
            made = f"Made at {round(job.strength * 100)} % strength"
            # Noise reduction is for videos: a photo's copy is made without it.
            video = source_kind(job.source) == "video"
            made += f", noise reduction {'on' if job.denoise else 'off'}." if video else "."
            if video and self.denoise_check.isChecked() and not job.denoise:
                details = details.replace(
                    GRAIN_ADVICE_WORDS, "save it again (noise reduction is on now) to reduce it"
                )
            details = f"{details}\n{made}" if details else made
        # Where the copy, or the frames a stop or a failure kept, can be found; none when
        # nothing was written.
        where = saved_folder(result)
        self._save_said = UserMessage(kind, headline, details, folder=where)
        if not (self._closing or self._closing_save):
            self.show_message(self._save_said)

    def moveEvent(self, event: QMoveEvent) -> None:  # noqa: N802 - Qt API
        super().moveEvent(event)
        if self.isVisible():
            self._schedule_save()  # the geometry, too, survives a crash

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self.isVisible():
            self._schedule_save()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        job = self.save_job
        if not self._closing and job is not None and job.running():
            # Stop pressed already: "Stop it and quit?" asked of a save that was ending, and
            # "No" did not keep it.
            asked = self._close_without_asking or job.stopping
            if not (asked or self.ask_stop_save()):
                event.ignore()  # the save goes on, and the window with it
                return
            self._closing_save = True  # its banner is not shown on a window going away
            job.stop()
            # Its frames so far are kept as NAME.incomplete.EXT; a close that returned first
            # left the child writing on after the app had gone, and nobody said where.
            if not job.wait(SAVE_STOP_WAIT_S):
                job.kill()
            if job.result is not None:
                # Said where it can still be read (a terminal, the log): the banner cannot be.
                _, headline, details = describe_result(job.result)
                said = " ".join(f"{headline}: {details}".split())
                log.warning("%s", said)
                print(f"sharpcam: {said}", file=sys.stderr)
        if not self._closing:
            self._closing = True
            self.save_now()
            self.final_stats = self.bridge.stats()
            self.stopped_in_time = self.bridge.stop(timeout=STOP_TIMEOUT_S)
            if self.virtual_dialog is not None:
                self.virtual_dialog.close()
            if self.tray is not None:
                self.tray.hide()
            self.closed.emit()
        event.accept()


# --------------------------------------------------------------------------- helpers


def _named_source(source: str) -> CameraChoice:
    """The picker entry of a source named on the command line or opened: "File: NAME" for a
    file or folder (played in a loop, as the demo clip is), "Camera N" for a camera."""
    # A path under /dev that is not a camera (a clip in /dev/shm) is a file.
    is_file = source_kind(source) != "camera"
    name = f"File: {Path(source).name or source}" if is_file else f"Camera {source}"
    return CameraChoice(id=source, name=name, source=source, is_demo=is_file)


def _dropped_path(event: QDragEnterEvent | QDropEvent) -> str | None:
    """The one local file or folder being dropped; None for anything else (text, a web
    address, several files: which of them would play?)."""
    urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
    if len(urls) != 1 or not urls[0].isLocalFile():
        return None
    return urls[0].toLocalFile() or None


def format_stats(stats: EngineStats | None) -> str:
    """One status-bar line from an engine stats snapshot, e.g.
    ``29.9 fps · latency 34 ms (p95 41 ms) · dropped 3``."""
    if stats is None:
        return "—"
    if not stats.frames_out and not stats.fps_out:
        # No frame out yet, so no latency measured: "0.0 fps · latency 0 ms (p95 0 ms)" showed
        # for seconds while a slow CPU ran its first 720p frame (`run` says it so too).
        text = "waiting for the first frame" if stats.running else "no frame sent"
        return f"{text} · dropped {stats.dropped}" if stats.dropped else text
    return (
        f"{stats.fps_out:.1f} fps · latency {stats.latency_ms_p50:.0f} ms "
        f"(p95 {stats.latency_ms_p95:.0f} ms) · dropped {stats.dropped}"
    )


def scale_label(scale: float | str) -> str:
    """The picker's text for a processing scale, e.g. ``Processing: 75 % size``."""
    if scale == "auto":
        return "Processing: auto size (keeps up)"
    if float(scale) >= 1.0:
        return "Processing: full size"
    return f"Processing: {float(scale) * 100:g} % size"


def sidebar_width(window: QWidget) -> int:
    """SIDEBAR_WIDTH, widened in step with larger text than it was laid out for.

    A font DPI above the pixels' (a screen of 144 or 192 logical dpi, as X11's Xft.dpi sets it,
    with QT_ENABLE_HIGHDPI_SCALING=0) enlarges the style sheet's points but no pixel: in the
    fixed 320 px the buttons, switches and pickers read "ide by sid", "Reduce noise in dim
    lig", "Demo clip (b".
    """
    window.ensurePolished()  # the style sheet's font
    px = QFontInfo(window.font()).pixelSize()
    return max(SIDEBAR_WIDTH, round(SIDEBAR_WIDTH * px / SIDEBAR_TEXT_PX))


def _section(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("section")
    return label


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ZWSP = "\u200b"  # a line may break here; nothing is drawn
_WORD_JOINER = "\u2060"  # a line may not break here; nothing is drawn
_BREAK_AFTER = re.compile(r"([/\\_:.,;=\-]+)")


def _breakable(text: str, run: int = 24, fits: Callable[[str], bool] | None = None) -> str:
    """``text`` with places to break inside words longer than ``run`` characters, and inside
    any that ``fits`` says is wider than a line.

    Qt wraps only between words: a path or a library's symbol in an error made the banner's
    words wider than the banner (the minimum window width used to grow to ~1024 px for one;
    in the scrolling banner the rest was cut off). A zero-width space goes after each
    separator (``/ \\ _ : . , ; = -``), and every ``run`` characters where a stretch has none.
    A shorter word gets them only where it is wider than a line: at 32 pt a file name of 18
    characters (``clip_sharpened.mp4``) was, and its end was cut off; a stretch still too wide
    breaks where the line ends.
    """

    def split(word: str) -> str:
        long = len(word) > run
        if not long and (fits is None or fits(word)):
            return word
        out = []
        for part in _BREAK_AFTER.split(word):
            if _BREAK_AFTER.fullmatch(part):
                out.append(part + _ZWSP)
            elif part:
                pieces = _chunks(part, run) if long else [part]
                if fits is not None:
                    pieces = [cut for piece in pieces for cut in _fitting(piece, fits)]
                out.append(_ZWSP.join(pieces))
        return "".join(out)

    return re.sub(r"\S+", lambda m: split(m.group(0)), text)


def _chunks(part: str, run: int) -> list[str]:
    """``part`` cut every ``run`` characters, never between an "f" and a letter it forms a
    ligature with: the font joins "ff", "fi" and "fl" across the zero-width space into one
    glyph that Qt does not break, and a sha256 with "ef|f8" there widened the banner's words
    past its edge (the rest of each line was cut off)."""
    out = []
    start = 0
    while start < len(part):
        end = start + run
        while end < len(part) and part[end - 1] in "fF" and part[end] in "fFiIlL":
            end += 1
        out.append(part[start:end])
        start = end
    return out


def _fitting(part: str, fits: Callable[[str], bool]) -> list[str]:
    """``part`` cut into the longest pieces that ``fits`` takes (one character at least),
    never between an "f" and a letter it forms a ligature with (see _chunks)."""
    out = []
    start = 0
    while start < len(part):
        end = start + 1
        while end < len(part) and fits(part[start : end + 1]):
            end += 1
        while start + 1 < end < len(part) and part[end - 1] in "fF" and part[end] in "fFiIlL":
            end -= 1
        out.append(part[start:end])
        start = end
    return out


__all__ = [
    "MainWindow",
    "MessageBanner",
    "ToggleSwitch",
    "VirtualCameraDialog",
    "app_icon",
    "format_stats",
]

"""The live preview: before/after with a draggable split, side by side, or after only.

A view: it paints the two most recent ``QImage`` s it was given and reports where the person
dragged the divider, or moved it with the keys (Tab or a click reaches it in split mode). It
never talks to the engine. Mirroring happens only here, at paint time, so what others receive
through the virtual camera is never mirrored.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFocusEvent,
    QFont,
    QFontMetrics,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QTransform,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

VIEW_MODES = ("split", "side", "after")

_BG = QColor("#0b0d12")
_WINDOW_BG = QColor("#0f1117")
_ACCENT = QColor("#38bdf8")
_FOCUS = QColor("#e0f2fe")  # the window's keyboard focus ring

#: The text size the badges were laid out for (the window's style sheet's 10 pt): larger
#: text in the widget's font enlarges them in step.
_DESIGN_PT = 10.0
_BADGE_PT = 8.5  # a badge's text at the design's size
_BADGE_LEAST_PT = 7.0  # the least a badge shrinks to, to fit a narrow picture
#: The badges' names, and the short ones shown where the whole one does not fit its part of
#: the picture: larger text in a narrow preview showed BEFORE at the design's 8.5 pt beside an
#: AFTER three times its size, or not at all with the divider near the left edge.
BEFORE_LABEL, BEFORE_SHORT = "BEFORE", "BEF."
AFTER_LABEL, AFTER_SHORT = "AFTER", "AFT."
#: (margin from the picture's edges, padding either side of the text): the design's, then
#: closer where a picture is narrow.
_BADGE_SPACING = ((12, 10), (6, 6))


class Badge(NamedTuple):
    """A badge as the preview draws it (widget coordinates)."""

    text: str  # as shown: its whole name, or the short one where that does not fit
    box: QRectF
    picture: QRectF  # the part of the picture it names, which holds it whole
    font: QFont
    processed: bool  # the processed side's (accent) style; else the original's (dark)


#: How far one arrow key moves the divider, as a fraction of the picture's width.
SPLIT_STEP = 0.05
#: How far PageUp / PageDown move it.
SPLIT_PAGE_STEP = 0.25
#: The divider's focus policy while it is shown: Tab and a click reach it.
_SPLIT_FOCUS = Qt.FocusPolicy.StrongFocus


class PreviewWidget(QWidget):
    """Paints ``original`` and ``processed`` frames.

    Modes: ``"split"`` shows the original left of a draggable divider and the processed frame
    right of it (the same pixels, so the divider is a true A/B); ``"side"`` shows both whole,
    next to each other; ``"after"`` shows the processed frame only.

    In split mode the divider is also a keyboard control, as a slider is: Tab or a click reaches
    it (a ring shows it has the focus), Left / Right move it by :data:`SPLIT_STEP`, PageDown /
    PageUp by :data:`SPLIT_PAGE_STEP`, Home / End to the edges. The ring shows only where the
    keyboard is in use, as a browser's ``:focus-visible``: focus that came by Tab (or Backtab,
    a shortcut), or a key that moved the divider; not focus the window gave it as it opened,
    nor a click.
    """

    split_changed = Signal(float)  # divider position, fraction of the image width in [0, 1]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._original: QImage | None = None
        self._processed: QImage | None = None
        self._mode = "split"
        self._split = 0.5
        self._mirror = False
        # A camera is mirrored when asked (a selfie view); a video file plays as it was
        # recorded: the demo clip's text read backwards.
        self._mirrorable = True
        self._dragging = False
        self._focus_visible = False  # the ring is drawn (see the class docstring)
        self._placeholder = "Starting camera…"
        self._after_label = AFTER_LABEL  # what the processed side is called (set_after_label)
        self._after_short = AFTER_SHORT  # and where the picture is too narrow for that
        self.frames_shown = 0  # painted frame count; tests and the FPS readout use it
        # 400 px keeps the window's least width (with its margins and the sidebar) at 756 px,
        # inside an 800x600 screen; at 480 it was 836.
        self.setMinimumSize(QSize(400, 225))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        # A click too, not Tab alone: the hint under the preview offers ← → after a click on
        # it, and those keys went on moving the control clicked before (the strength slider).
        # Space stays the window's shortcut for sharpening here (keyPressEvent passes it on).
        self.setFocusPolicy(_SPLIT_FOCUS)
        self.setAccessibleName("Before and after divider")
        self._describe_split()

    # --- commands ------------------------------------------------------------------------------
    def set_frames(self, original: QImage, processed: QImage) -> None:
        """Show a new pair (both ``QImage`` s own their pixels; the caller copied them)."""
        self._original = original
        self._processed = processed
        self.frames_shown += 1
        self.update()

    def clear(self, placeholder: str) -> None:
        self._original = self._processed = None
        self._placeholder = placeholder
        self.update()

    def set_mode(self, mode: str) -> None:
        if mode not in VIEW_MODES:
            raise ValueError(f"view mode must be one of {VIEW_MODES}, got {mode!r}")
        self._mode = mode
        # Only where there is a divider to move: Tab must not stop at a control that is not
        # on screen.
        self.setFocusPolicy(_SPLIT_FOCUS if mode == "split" else Qt.FocusPolicy.NoFocus)
        if mode != "split" and self.hasFocus():
            # To no other control: Space, which would press that one, stays for sharpening.
            self.clearFocus()
        self.update()

    def set_split(self, fraction: float) -> None:
        fraction = float(fraction)
        if math.isnan(fraction):
            # Checked before anything changes: NaN survives the clamp (every comparison with it
            # is False) and left a divider at NaN, which crashed at round() just below and at
            # every later key press or save.
            raise ValueError(f"expected a divider position in [0, 1], got {fraction}")
        self._split = min(max(fraction, 0.0), 1.0)
        self._describe_split()
        self.update()

    def _describe_split(self) -> None:
        # Read out by screen readers, with the name: where the divider is, and how to move it.
        self.setAccessibleDescription(
            f"{round(self._split * 100)} % of the picture shows the camera before sharpening, "
            "the rest after. Left and Right arrows move the divider, Home and End to the edges."
        )

    def set_mirror(self, mirror: bool) -> None:
        self._mirror = bool(mirror)
        self.update()

    def set_after_label(self, text: str, short: str | None = None) -> None:
        """The processed side's badge: "AFTER", or "SHARPENING OFF" while Space has turned it
        off (an "AFTER" over the unsharpened picture said the opposite of what it showed).

        ``short`` (``text`` itself where not given) is shown where ``text`` does not fit its
        picture even in a smaller size (a portrait source side by side, or a split at the
        window's least width): the badge is then hidden only where neither fits.
        """
        self._after_label = text
        self._after_short = text if short is None else short
        self.update()

    @property
    def after_label(self) -> str:
        return self._after_label

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def split(self) -> float:
        return self._split

    def set_mirrorable(self, mirrorable: bool) -> None:
        """Whether what plays is a camera, which :meth:`set_mirror` flips (a file is not)."""
        self._mirrorable = bool(mirrorable)
        self.update()

    @property
    def mirror(self) -> bool:
        """The person's choice (the setting)."""
        return self._mirror

    @property
    def mirrored(self) -> bool:
        """Whether the picture is drawn flipped now: the choice, for a camera only."""
        return self._mirror and self._mirrorable

    def has_frame(self) -> bool:
        return self._processed is not None

    # --- geometry ------------------------------------------------------------------------------
    def _fit(self, area: QRectF, w: int, h: int) -> QRectF:
        """Largest rect with aspect ``w:h`` centred in ``area`` (letterbox)."""
        if w <= 0 or h <= 0:
            return area
        scale = min(area.width() / w, area.height() / h)
        fw, fh = w * scale, h * scale
        return QRectF(
            area.x() + (area.width() - fw) / 2, area.y() + (area.height() - fh) / 2, fw, fh
        )

    def image_rect(self) -> QRectF:
        """Where the frame is drawn in split/after modes (widget coordinates)."""
        img = self._processed
        if img is None:
            return QRectF(self.rect())
        return self._fit(QRectF(self.rect()).adjusted(12, 12, -12, -12), img.width(), img.height())

    # --- painting ------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), _WINDOW_BG)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(_BG)
        p.drawRoundedRect(QRectF(self.rect()), 14, 14)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        if self._processed is None or self._original is None:
            self._paint_placeholder(p)
            p.end()
            return
        if self._mode == "side":
            self._paint_side(p)
        elif self._mode == "after":
            self._paint_image(p, self._processed, self.image_rect())
        else:
            self._paint_split(p)
        for badge in self.badges():
            self._paint_badge(p, badge)
        p.end()

    def _paint_image(
        self, p: QPainter, img: QImage, target: QRectF, clip: QRectF | None = None
    ) -> None:
        p.save()
        path = QPainterPath()
        path.addRoundedRect(target, 10, 10)
        p.setClipPath(path)
        if clip is not None:
            p.setClipRect(clip, Qt.ClipOperation.IntersectClip)
        if self.mirrored:
            # Flip about the target's vertical centre line: a mirror, as people expect of a selfie.
            t = QTransform()
            t.translate(target.center().x(), 0).scale(-1, 1).translate(-target.center().x(), 0)
            p.setTransform(t, True)
        p.drawImage(target, img)
        p.restore()

    def _split_parts(self) -> tuple[QRectF, QRectF]:
        """The parts of the picture left (the original) and right of the divider."""
        r = self.image_rect()
        x = r.left() + self._split * r.width()
        return (
            QRectF(r.left(), r.top(), x - r.left(), r.height()),
            QRectF(x, r.top(), r.right() - x, r.height()),
        )

    def _paint_split(self, p: QPainter) -> None:
        r = self.image_rect()
        left, right = self._split_parts()
        x = right.left()
        self._paint_image(p, self._original, r, left)  # type: ignore[arg-type]
        self._paint_image(p, self._processed, r, right)  # type: ignore[arg-type]
        # Divider with a round grab handle.
        p.setPen(QPen(QColor(255, 255, 255, 230), 2))
        p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
        c = QPointF(x, r.center().y())
        p.setBrush(QColor(255, 255, 255, 235))
        p.setPen(QPen(QColor(0, 0, 0, 60), 1))
        p.drawEllipse(c, 16, 16)
        p.setPen(QPen(QColor("#0f172a"), 2))
        for sign in (-1, 1):
            tip = QPointF(c.x() + sign * 9, c.y())
            p.drawLine(tip, QPointF(c.x() + sign * 4, c.y() - 5))
            p.drawLine(tip, QPointF(c.x() + sign * 4, c.y() + 5))
        if self._ring_shown():
            # The ring the window's other controls show when Tab reaches them, around the
            # handle the keys move.
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(_FOCUS, 2))
            p.drawEllipse(c, 20, 20)

    def side_rects(self) -> tuple[QRectF, QRectF]:
        """Where the original and the processed frames are drawn in side mode (widget coords)."""
        area = QRectF(self.rect()).adjusted(12, 12, -12, -12)
        half = (area.width() - 12) / 2
        rects = []
        for i, img in enumerate((self._original, self._processed)):
            cell = QRectF(area.left() + i * (half + 12), area.top(), half, area.height())
            rects.append(cell if img is None else self._fit(cell, img.width(), img.height()))
        return rects[0], rects[1]

    def _paint_side(self, p: QPainter) -> None:
        before, after = self.side_rects()
        self._paint_image(p, self._original, before)  # type: ignore[arg-type]
        self._paint_image(p, self._processed, after)  # type: ignore[arg-type]

    def badges(self) -> list[Badge]:
        """The badges over the picture now, each inside the part of the picture it names.

        Split: BEFORE top-left of the divider, the processed side's name top-right of it (each
        only over its own side: with the divider at an edge, the whole picture is one of them
        and the other badge named a side that was not there). Side by side: both top-left of
        their frame (only the style tells them apart). After only: top-right.
        """
        if self._processed is None or self._original is None:
            return []
        after = (self._after_label, self._after_short)
        if self._mode == "side":
            before_rect, after_rect = self.side_rects()
            wanted = [
                (before_rect, (BEFORE_LABEL, BEFORE_SHORT), False, False),
                (after_rect, after, False, True),
            ]
        elif self._mode == "after":
            wanted = [(self.image_rect(), after, True, True)]
        else:
            left, right = self._split_parts()
            before = (BEFORE_LABEL, BEFORE_SHORT)
            wanted = [(left, before, False, False), (right, after, True, True)]
        found = (self._fit_badge(*args) for args in wanted)
        return [badge for badge in found if badge is not None]

    def _fit_badge(
        self, picture: QRectF, names: tuple[str, ...], right: bool, processed: bool
    ) -> Badge | None:
        """The first of ``names`` (its whole name, then its short one) that fits ``picture``,
        in the largest size that does: the design's, enlarged as the widget's text is, down to
        _BADGE_LEAST_PT; None where none fits (a badge past its picture covered the other one,
        or the background, where a portrait source's was narrower than "SHARPENING OFF")."""
        base = _BADGE_PT * max(1.0, self.font().pointSizeF() / _DESIGN_PT)
        sizes = [pt for pt in (base, base * 0.8, base * 0.64) if pt > _BADGE_PT]
        sizes += [_BADGE_PT, _BADGE_LEAST_PT]
        for pt in sizes:
            font = QFont(self.font())
            font.setPointSizeF(pt)
            font.setBold(True)
            font.setLetterSpacing(QFont.SpacingType.AbsoluteSpacing, 1.2)
            fm = QFontMetrics(font, self)
            for text in dict.fromkeys(names):  # each once, in order
                for margin, pad in _BADGE_SPACING:
                    w, h = fm.horizontalAdvance(text) + 2 * pad, fm.height() + 8
                    x = picture.right() - w - margin if right else picture.left() + margin
                    box = QRectF(x, picture.top() + margin, w, h)
                    if picture.contains(box):
                        return Badge(text, box, picture, font, processed)
        return None

    def _paint_badge(self, p: QPainter, badge: Badge) -> None:
        box, h = badge.box, badge.box.height()
        p.setFont(badge.font)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(
            QColor(_ACCENT.red(), _ACCENT.green(), _ACCENT.blue(), 220)
            if badge.processed
            else QColor(15, 23, 42, 190)
        )
        p.drawRoundedRect(box, h / 2, h / 2)
        p.setPen(QColor("#0b1220") if badge.processed else QColor("white"))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, badge.text)

    def _paint_placeholder(self, p: QPainter) -> None:
        if self._ring_shown():
            # No divider to ring before the first frame: the keys still move it (remembered).
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(_FOCUS, 2))
            p.drawRoundedRect(QRectF(self.rect()).adjusted(1, 1, -1, -1), 14, 14)
        p.setPen(QColor("#64748b"))
        font = QFont(self.font())
        # Larger with larger text, as the badges; on more lines where it is wider than the view.
        font.setPointSizeF(13 * max(1.0, font.pointSizeF() / _DESIGN_PT))
        p.setFont(font)
        p.drawText(
            QRect(self.rect()).adjusted(12, 12, -12, -12),
            Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
            self._placeholder,
        )

    # --- dragging the divider ------------------------------------------------------------------
    def _near_divider(self, x: float) -> bool:
        r = self.image_rect()
        return abs(x - (r.left() + self._split * r.width())) < 24

    def _split_at(self, x: float) -> float:
        r = self.image_rect()
        return 0.5 if r.width() <= 0 else min(max((x - r.left()) / r.width(), 0.0), 1.0)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self._mode == "split" and event.button() == Qt.MouseButton.LeftButton:
            # Clicking anywhere on the image moves the divider there, then dragging follows.
            self._dragging = True
            self.set_split(self._split_at(event.position().x()))
            self.split_changed.emit(self._split)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        x = event.position().x()
        if self._dragging:
            self.set_split(self._split_at(x))
            self.split_changed.emit(self._split)
        elif self._mode == "split" and self._near_divider(x):
            self.setCursor(Qt.CursorShape.SplitHCursor)
        else:
            self.unsetCursor()
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self._dragging = False
        super().mouseReleaseEvent(event)

    # --- moving the divider with the keys ------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        target = self._split_for_key(event.key()) if self._mode == "split" else None
        if target is None:
            super().keyPressEvent(event)  # Tab, Space (sharpening) and the rest go on
            return
        if not self._focus_visible:
            # The keyboard is in use here now (the window may have opened with the focus on
            # the divider): what the keys move must show that it has the focus.
            self._focus_visible = True
            self.update()
        if target != self._split:
            self.set_split(target)
            self.split_changed.emit(self._split)
        event.accept()

    def _split_for_key(self, key: int) -> float | None:
        """Where ``key`` moves the divider; None for a key that does not move it."""
        # The arrows stop at whole steps, as a slider's do: from 0.48 (dragged there) Right
        # goes to 0.50 and Left to 0.45. The tolerance absorbs 0.55 / 0.05 = 11.000000000000002.
        at = self._split / SPLIT_STEP
        moves = {
            Qt.Key.Key_Left: (math.ceil(at - 1e-6) - 1) * SPLIT_STEP,
            Qt.Key.Key_Right: (math.floor(at + 1e-6) + 1) * SPLIT_STEP,
            Qt.Key.Key_PageDown: self._split - SPLIT_PAGE_STEP,
            Qt.Key.Key_PageUp: self._split + SPLIT_PAGE_STEP,
            Qt.Key.Key_Home: 0.0,
            Qt.Key.Key_End: 1.0,
        }
        target = moves.get(key)  # type: ignore[call-overload]  # an int equals its Qt.Key
        return None if target is None else round(min(max(target, 0.0), 1.0), 6)

    def _ring_shown(self) -> bool:
        return self._focus_visible and self.hasFocus()

    def focusInEvent(self, event: QFocusEvent) -> None:  # noqa: N802 - Qt API
        super().focusInEvent(event)
        reason = event.reason()
        if reason in _KEYBOARD_FOCUS:
            self._focus_visible = True
        elif reason not in _FOCUS_COMING_BACK:
            # Given by the program (the window's first focus) or a click, not by a key: a
            # ring there stood around the divider before anyone pressed one, in every
            # screenshot.
            self._focus_visible = False
        self.update()  # the focus ring

    def focusOutEvent(self, event: QFocusEvent) -> None:  # noqa: N802 - Qt API
        super().focusOutEvent(event)
        if event.reason() not in _FOCUS_COMING_BACK:
            # Gone (Tab went on, the view changed): focus the program gives back later is no
            # keyboard's.
            self._focus_visible = False
        self.update()


#: Focus reasons that mean the keyboard brought the focus: the ring shows.
_KEYBOARD_FOCUS = (
    Qt.FocusReason.TabFocusReason,
    Qt.FocusReason.BacktabFocusReason,
    Qt.FocusReason.ShortcutFocusReason,
)
#: Focus that comes back to where it was (another window was active, a menu was open): the ring
#: stays as it was. Also how Qt gives a window's first control the focus as the window first
#: activates: no ring then, as no key was pressed.
_FOCUS_COMING_BACK = (
    Qt.FocusReason.ActiveWindowFocusReason,
    Qt.FocusReason.PopupFocusReason,
)

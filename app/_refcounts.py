"""Keep ``None``, ``True`` and ``False`` alive under PySide6 builds that drop references to them.

PySide6 6.12.0 on CPython 3.10/3.11 hands back ``None`` from every wrapped Qt method without a
return value (``setText``, ``update``, every ``QPainter`` call), and ``True`` from every
``Signal.emit``, one reference short (6.11.3 does not). CPython 3.12+ makes these objects
immortal, so nothing happens there; before 3.12 ``None`` loses about 45 references per painted
preview frame, and at zero the interpreter aborts ("Fatal Python error: none_dealloc", then
"bool_dealloc"): the window died after 15-20 s of video. Giving them the same huge count 3.12
gives them makes the missing references harmless; they are never freed either way.
"""

from __future__ import annotations

import ctypes
import sys


def headroom(refcnt_bytes: int) -> int:
    """The count to add for a reference count field of ``refcnt_bytes`` bytes.

    What 3.12+ treats as immortal is of this order: 2**40 on 64-bit builds (at 10^5 lost
    references a second it lasts for decades), 2**29 on 32-bit ones (3.12 uses 2**30 - 1 there),
    where 2**40 does not fit: ctypes truncates it silently to 0, and nothing would be raised.
    """
    return 1 << 40 if refcnt_bytes >= 8 else 1 << (8 * refcnt_bytes - 3)


_HEADROOM = headroom(ctypes.sizeof(ctypes.c_ssize_t))


def keep_singletons_alive() -> bool:
    """Raise the reference counts of None, True and False far out of reach (idempotent);
    True when that was needed."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if hasattr(sys, "getobjects"):
        # A Py_TRACE_REFS build: ob_refcnt is not the first field there.
        return False
    raised = False
    for obj in (None, True, False):
        if sys.getrefcount(obj) < _HEADROOM // 2:
            # ob_refcnt is the first field of every PyObject; the GIL is held, so no other
            # thread changes it while this writes.
            ctypes.c_ssize_t.from_address(id(obj)).value += _HEADROOM
            raised = True
    return raised

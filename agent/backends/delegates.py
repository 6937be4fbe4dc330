"""Is a file a TFLite delegate library? Asked before LiteRT's ``load_delegate`` sees it.

``load_delegate`` on a missing file raises OSError and then prints ``Exception ignored in
Delegate.__del__`` (its half-built object has no ``_library``); on a shared library that is not a
delegate it raises AttributeError. Both are a user's config mistake, so we find out first, with
ctypes, and say which.
"""

from __future__ import annotations

import ctypes

# every external TFLite delegate exports this pair (the plugin ABI load_delegate calls)
DELEGATE_ENTRY_POINTS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


def delegate_problem(library: str) -> str | None:
    """Why ``library`` cannot serve as a TFLite delegate, or None when it exports the delegate entry points."""
    try:
        handle = ctypes.CDLL(library)
    except OSError as exc:
        return f"cannot be loaded ({exc})"
    missing = [name for name in DELEGATE_ENTRY_POINTS if not hasattr(handle, name)]
    if missing:
        return f"is a shared library but not a TFLite delegate (it does not export {', '.join(missing)})"
    return None

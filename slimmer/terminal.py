"""Text slim prints, made safe for the user's terminal.

Much of what slim prints comes from a container or an image: the app's
output (`app| ...`), a probe's answer, the end of an app's output in an
error, the sensor's messages, an image's paths and config values. Any of
them can hold a terminal's control sequences (colours, a cursor move, a
window title, a sequence that rewrites what was printed before), and a
hostile image can use them to forge or hide slim's own lines. Every line
slim writes for a person goes through `visible`: control characters are
shown as escapes (`\\x1b`, `\\r`), as are the Unicode controls that reorder
what follows and the bytes that are not UTF-8 (image paths keep them as
surrogates). Newlines (which separate lines slim wrote) and tabs stay.
Machine-readable output (JSON) escapes them by itself.
"""

from __future__ import annotations

import re

# C0 but tab and newline, DEL, C1; the bidirectional and zero-width format
# controls (which reorder or hide what follows); lone surrogates.
_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every character a terminal would act on, or hide, shown
    as an escape instead; newlines and tabs kept."""
    return _HIDDEN.sub(_escape, text)

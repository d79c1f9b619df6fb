"""Text from files (class names, paths) made safe to print on a terminal.

A class name comes from a folder name, a zip member or a `labels.txt` beside a downloaded model, so it can
hold escape sequences (`\\x1b]...`: retitle the window, rewrite earlier lines, hide text) or bidirectional
overrides that reorder what the user reads. Those characters are shown escaped, as Python writes them.
"""

from __future__ import annotations

import unicodedata

# Bidirectional embeddings, overrides and isolates (Unicode Cf characters that reorder displayed text),
# and the line and paragraph separators (which split a printed line).
_REORDERING = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C, 0x2028, 0x2029}


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with control characters (C0, DEL, C1) and text-reordering characters escaped (`\\x1b`, `\\u202e`)."""
    return "".join(_escaped(c) if unicodedata.category(c) == "Cc" or ord(c) in _REORDERING else c for c in str(text))


def printable_lines(text: str) -> str:
    """`printable` on each line of a multi-line text, keeping its line breaks."""
    return "\n".join(printable(line) for line in text.split("\n"))

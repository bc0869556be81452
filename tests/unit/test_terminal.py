"""What slim prints is shown, never acted on, by the user's terminal."""

from __future__ import annotations

import os

from slimmer.terminal import visible


def test_control_characters_are_shown_as_escapes() -> None:
    assert visible("\x1b[31mred\x1b[0m\r\x07\x7f\x9b") == "\\x1b[31mred\\x1b[0m\\x0d\\x07\\x7f\\x9b"


def test_reordering_controls_and_bytes_that_are_not_utf8_are_shown() -> None:
    assert visible("a\u202eb\u2066c\u200bd") == "a\\u202eb\\u2066c\\u200bd"
    assert visible(os.fsdecode(b"/data/caf\xe9")) == "/data/caf\\xe9"


def test_lines_tabs_and_text_stay_as_they_are() -> None:
    text = "slim: app| col1\tcol2\n--- last output ---\nnaïve café 日本"
    assert visible(text) == text

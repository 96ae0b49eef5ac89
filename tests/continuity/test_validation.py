"""Human-entered text: names stay one clean line, prose keeps its line ends, neither holds a
control character (each refusal says which character and where)."""

from __future__ import annotations

import re

import pytest

from continuity.errors import ValidationFailed
from continuity.validation import check_text


@pytest.mark.parametrize(
    "text", ["Bộ Chỉ huy Quân sự tỉnh", "Đắk Tô – Ngọc Hồi (QL14)", "Sở TT&TT, phòng 2"]
)
def test_names_in_vietnamese_accepted(text: str):
    assert check_text(text) == text


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("a\x00b", "control character (U+0000) at position 1"),
        ("a\nb", "control character (U+000A) at position 1"),
        ("\x9bmenu", "control character (U+009B) at position 0"),
        ("abc\u202edef", "control character (U+202E) at position 3"),
        ("\ufeffname", "control character (U+FEFF) at position 0"),
        ("r1; reload", "shell character (U+003B) at position 2"),
    ],
)
def test_names_with_control_or_shell_characters_refused_saying_which(text: str, refusal: str):
    with pytest.raises(ValidationFailed, match=re.escape(refusal)):
        check_text(text)


def test_prose_keeps_line_ends_tabs_and_shell_characters():
    text = "Cáp bị cắt; xem ảnh\r\n\t<kèm theo> $5"
    assert check_text(text, prose=True, max_len=2000) == text


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028", "\u2066"])
def test_prose_with_control_character_refused(char: str):
    with pytest.raises(ValidationFailed, match="control character"):
        check_text(f"reason{char}", prose=True)

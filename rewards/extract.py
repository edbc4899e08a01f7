"""Final-answer extraction and numeric normalisation for math completions."""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final\s+)?answer\s+is\s*:?\s*([^\n]+)", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_MAX_NUMBER_CHARS = 60


def _balanced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at text[start] and the index after it, or None if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}, or \\boxed 5) in text."""
    for match in reversed(list(_BOXED.finditer(text))):
        end = match.end()
        if end < len(text) and text[end] == "{":
            group = _balanced(text, end)
            if group is not None:
                return group[0].strip()
        elif match.group(0).endswith(" ") or match.group(0) != "\\boxed":
            token = re.match(r"[^\s$.,;]+", text[end:])
            if token:
                return token.group(0)
    return None


def _clean_tail(value: str) -> str:
    value = value.strip().strip("*").strip()
    value = re.sub(r"[.\s]+$", "", value)
    if value.startswith("$") and value.count("$") >= 2:
        value = value[1:value.index("$", 1)]
    return value.strip()


def extract_answer(text: str, *, last_number: bool = False) -> str | None:
    """The final answer of a completion: last \\boxed{}, else `#### N`, else "the answer is X", else the last
    <answer>...</answer>, else (when last_number) the last number in the text; None when there is none."""
    if not isinstance(text, str) or not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hashes = _HASHES.findall(text)
    if hashes:
        value = _clean_tail(hashes[-1])
        return value or None
    said = _ANSWER_IS.findall(text)
    if said:
        value = _clean_tail(said[-1])
        boxed = last_boxed(value)
        return boxed if boxed is not None else (value or None)
    tagged = _ANSWER_TAG.findall(text)
    if tagged and tagged[-1].strip():
        return _clean_tail(tagged[-1])
    if last_number:
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1].rstrip(".,")
    return None


_UNIT_WORDS = re.compile(r"(?:\s+[A-Za-z][A-Za-z.]*){1,3}$")
_TEXT = re.compile(r"\\(?:text|textbf|mbox|mathrm)\s*\{[^{}]*\}")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}$")
_FRAC_SHORT = re.compile(r"^(-?)\\[dt]?frac\s*(\d)\s*(\d)$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def normalize(value: str) -> str:
    """A canonical spelling of an answer for cheap string comparison (spaces, \\left, \\dfrac, $ removed)."""
    s = value.strip()
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\$", "").replace("$", "")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def to_number(value: str) -> Fraction | None:
    """The exact number an answer spells ("1,234", "$5", "12%", "3 cm", "-\\frac{1}{2}", "2/3", "4.50"), else None."""
    if not isinstance(value, str):
        return None
    s = value.strip()
    if not s or len(s) > 200:
        return None
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\!", "").replace("\\,", "").replace("{,}", ",").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = _TEXT.sub(" ", s).strip()
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 5"
    s = _UNIT_WORDS.sub("", s).strip() if re.match(r"^-?[\d.,\\]", s) else s
    s = _THOUSANDS.sub("", s).replace(" ", "")
    if s.startswith("+"):
        s = s[1:]
    frac = _FRAC.match(s) or _FRAC_SHORT.match(s)
    if frac:
        num, den = to_number(frac.group(2)), to_number(frac.group(3))
        if num is None or den is None or den == 0:
            return None
        result = num / den
        return -result if frac.group(1) else result
    if s.startswith("(") and s.endswith(")") and s.count("(") == 1:
        s = s[1:-1]
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?", s) or len(s) > _MAX_NUMBER_CHARS:
        return None
    try:
        if "/" in s:
            num, den = s.split("/")
            return None if Fraction(den) == 0 else Fraction(num) / Fraction(den)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(a: Fraction, b: Fraction) -> bool:
    """Exact equality, or agreement to 1e-9 relative (decimals written out against fractions)."""
    return a == b or abs(a - b) <= Fraction(1, 10**9) * max(1, abs(b))

"""Final-answer extraction and numeric normalisation for math completions."""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final\s+)?answer\s+is\s*:?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_MAX_NUMBER_CHARS = 60


_BOXED_TOKEN = re.compile(r"[^\s$.,;]+")


def _closing_braces(text: str) -> dict[int, int]:
    """Index of each "{" that is closed -> the index after its matching "}" (one pass, linear in the length)."""
    closes, stack = {}, []
    for match in re.finditer(r"[{}]", text):
        if match.group(0) == "{":
            stack.append(match.start())
        elif stack:
            closes[stack.pop()] = match.end()
    return closes


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}, or \\boxed 5) in text; linear in its length."""
    matches = list(_BOXED.finditer(text))
    closes = _closing_braces(text) if matches else {}
    for match in reversed(matches):
        end = match.end()
        if end < len(text) and text[end] == "{":
            if end in closes:
                return text[end + 1:closes[end] - 1].strip()
        elif match.group(0).endswith(" ") or match.group(0) != "\\boxed":
            token = _BOXED_TOKEN.match(text, end)
            if token:
                return token.group(0)
    return None


def _clean_tail(value: str) -> str:
    value = value.strip().strip("*").strip()
    end = len(value)
    while end and (value[end - 1] == "." or value[end - 1].isspace()):
        end -= 1
    value = value[:end]
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
    close = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, close) if close >= 0 else -1
    if start >= 0 and text[start + 8:close].strip():
        return _clean_tail(text[start + 8:close])
    if last_number:
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1].rstrip(".,")
    return None


_UNIT_WORDS = re.compile(r"(?:\s+[A-Za-z][A-Za-z.]*){1,3}$")
_TEXT = re.compile(r"\\(?:text|textbf|mbox|mathrm)\s*\{([^{}]*)\}")
_NOT_UNITS = frozenset("""
    and or plus minus times divided over by to of but not nor than then less more equals equal is are was with
    squared cubed power powers root roots factorial pi sqrt log ln sin cos tan exp mod modulo
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds thousand
    thousands million millions billion billions trillion trillions half halves third thirds quarter quarters
    dozen dozens point tenths hundredths""".split())


def _unit_words(words: str) -> bool:
    """Whether trailing words are units ("cm", "square feet", "dollars"): not connectives, operators, number
    words or single letters ("5 or six", "5 plus one", "5 x" are not 5)."""
    return all(len(w.rstrip(".")) >= 2 and w.rstrip(".").lower() not in _NOT_UNITS for w in words.split())


def number_then_words(value: str) -> bool:
    """A number followed by words that are not units ("5 or six", "5 apples and 6 pears")."""
    s = _TEXT.sub(r" \1 ", value.replace("$", "")).strip()
    match = _UNIT_WORDS.search(s)
    return bool(match and re.match(r"^-?[\d.,\\]", s) and not _unit_words(match.group(0)))
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
    s = _TEXT.sub(r" \1 ", s).strip()
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 5"
    units = _UNIT_WORDS.search(s) if re.match(r"^-?[\d.,\\]", s) else None
    if units:
        if not _unit_words(units.group(0)):
            return None
        s = s[:units.start()].strip()
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
    """Exact equality; agreement to 1e-9 relative only when neither is an integer (decimals written out against
    fractions): an integer answer must equal an integer gold exactly."""
    if a == b:
        return True
    if a.denominator == 1 or b.denominator == 1:
        return False
    return abs(a - b) <= Fraction(1, 10**9) * max(1, abs(b))

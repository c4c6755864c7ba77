"""GB 11643-1999 citizen identity numbers (公民身份号码), 18 characters.

Layout: 6-digit address code (GB/T 2260 division of first registration) + 8-digit birth date
(YYYYMMDD) + 3-digit sequence code (odd for men, even for women) + 1 check character computed
with ISO 7064:1983 MOD 11-2 over the first 17 digits; a check value of 10 is written 'X'.

Reusable by any package (EMPI, quality rules): ``check_char``, ``is_valid``, ``make_id``,
``birth_date_of`` and ``sex_code_of``.
"""

from __future__ import annotations

import re
from datetime import date

__all__ = ["check_char", "is_valid", "make_id", "birth_date_of", "sex_code_of"]

# Weight of position i (0-based, left to right) is 2**(17 - i) mod 11.
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"  # indexed by (sum of weighted digits) mod 11
_SHAPE = re.compile(r"^\d{17}[\dX]$")


def check_char(first17: str) -> str:
    """The MOD 11-2 check character ('0'-'9' or 'X') of the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"expected 17 digits, got {first17!r}")
    total = sum(map(int.__mul__, map(int, first17), WEIGHTS))
    return CHECK_CHARS[total % 11]


def is_valid(id18: str | None) -> bool:
    """True when ``id18`` is 18 characters, its check character is right and its birth date exists.

    A lower-case 'x' is accepted as the check character. The address code is not checked against
    GB/T 2260 (codes change over the years; numbers issued under old codes stay valid).
    """
    if not id18:
        return False
    s = id18.strip().upper()
    if not _SHAPE.match(s) or check_char(s[:17]) != s[17]:
        return False
    try:
        date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    return True


def make_id(division: str, birth: date, seq: int) -> str:
    """Build a valid number: ``seq`` is the 3-digit sequence code 0-999 (its parity is the sex)."""
    if len(division) != 6 or not division.isdigit() or not 0 <= seq <= 999:
        raise ValueError(f"bad division {division!r} or sequence {seq}")
    first17 = f"{division}{birth:%Y%m%d}{seq:03d}"
    return first17 + check_char(first17)


def birth_date_of(id18: str) -> date:
    return date(int(id18[6:10]), int(id18[10:12]), int(id18[12:14]))


def sex_code_of(id18: str) -> str:
    """GB/T 2261.1 sex code implied by the sequence code: '1' (odd, male) or '2' (even, female)."""
    return "1" if int(id18[16]) % 2 == 1 else "2"

"""The synthetic city: 内江市 (5110) with its residents, institutions and their daily extracts.

``generate_city(out, residents, days, seed)`` writes ``out/registry.yaml`` (the feed registry),
``out/landing/<institution>/<feed>/<feed>_<YYYYMMDD>.csv`` (what institutions deliver, with known
defects) and ``out/truth/`` (what is really there). See ``synthetic/README.md``.
"""

from synthetic.city import generate_city
from synthetic.gb11643 import check_char, is_valid

__all__ = ["generate_city", "check_char", "is_valid"]

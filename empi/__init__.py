"""Master patient index (EMPI): link every source identity to one person, with stable pseudonymous keys.

    from empi import link, run_in_lake, evaluate
"""

from empi.keys import person_key
from empi.link import LOWER, UPPER, LinkResult, link
from empi.standardise import standardise

__all__ = ["LOWER", "UPPER", "LinkResult", "link", "person_key", "standardise", "run_in_lake"]


def __getattr__(name):
    if name == "run_in_lake":
        from empi.lake import run_in_lake

        return run_in_lake
    raise AttributeError(name)

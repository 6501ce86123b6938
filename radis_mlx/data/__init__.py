"""Readers for every stage's data: translation pairs (``pairs``) and instruction sets (``instructions``).

Every reader either returns clean, validated rows or raises a UserError/DataError that
names the file, the line (or ``[i]``, the 0-based element of a one-line JSON array)
and the field, so a bad row deep in a file costs the user one look, not a debug session.
"""

from .instructions import load_instructions
from .pairs import LANG_NAMES, Pair, lang_name, load_pairs, pair_id, parse_directions
from .rows import sample

__all__ = ["LANG_NAMES", "Pair", "lang_name", "load_instructions", "load_pairs", "pair_id", "parse_directions",
           "sample"]

"""A training target as plain data: a prompt and the answer's text pieces, each piece tagged with the
segment it trains as. The registry (methods.py) says which pieces a method's rows make; finetune
(tuner/datasets.py) reads rows and files into targets and tokenises them, one segment id per token:

    0 prompt (no loss)   1 reference   2 rationale   3 end-of-turn

The loss weights (w_ref, w_rat) and the normalisation are applied per segment in tuner/losses.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROMPT, REF, RAT, EOT = 0, 1, 2, 3


@dataclass
class Target:
    """One row as text pieces: the prompt and the (text, segment) pieces of the answer."""
    id: str
    prompt: str
    pieces: list[tuple[str, int]]


@dataclass
class BuildStats:
    rows: int = 0
    examples: int = 0
    truncated: int = 0  # rationale shortened to fit max_len
    dropped_too_long: int = 0  # even without the rationale it didn't fit
    dropped_rejected: int = 0  # replay rows the generate filters rejected (no reference to fall back on)
    reference_only: int = 0  # rationale rows with kept=false: reference-only target
    tokens: dict = field(default_factory=lambda: {"prompt": 0, "ref": 0, "rationale": 0, "eot": 0})

    def as_dict(self) -> dict:
        return dict(self.__dict__)

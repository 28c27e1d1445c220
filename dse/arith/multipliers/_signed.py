"""Signed-operand schemes: table builders that run an unsigned core on 8-bit patterns of either signedness.

Sign-magnitude (every family but Mitch-w): |a|, |w| (|-128| = 128) through the core, sign applied. One's-complement
(Mitch-w, Kim et al.): a negative operand becomes the bitwise NOT of its pattern (|v| - 1), the result is NOT-ed
(-P - 1) when the signs differ, 0 if an original operand is 0.
"""
from __future__ import annotations

import numpy as np

from dse.arith.multipliers._base import pattern_values


def sign_magnitude(core):
    """Table builder: |a|, |w| through the unsigned core, sign of a*w applied."""
    def build(a_signed: bool, w_signed: bool) -> np.ndarray:
        va, vw = pattern_values(a_signed)[:, None], pattern_values(w_signed)[None, :]
        return np.sign(va) * np.sign(vw) * core(np.abs(va), np.abs(vw))
    return build


def ones_complement(core):
    """Table builder, one's-complement variant: negative -> NOT of its pattern (|v|-1), core, NOT (-P-1) if the signs
    differ, 0 if an original operand is 0."""
    def build(a_signed: bool, w_signed: bool) -> np.ndarray:
        va, vw = pattern_values(a_signed)[:, None], pattern_values(w_signed)[None, :]
        p = core(np.where(va < 0, -va - 1, va), np.where(vw < 0, -vw - 1, vw))
        p = np.where((va < 0) != (vw < 0), -p - 1, p)
        return np.where((va == 0) | (vw == 0), 0, p)
    return build

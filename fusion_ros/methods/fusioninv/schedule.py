"""FusionINV's step bookkeeping: the working size and the authors' K/V injection schedule.

The authors count every step threshold on a 100-step schedule; :func:`scale_step` maps them to a run
of another length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["AUTHORS_STEPS", "InjectionSchedule", "scale_step", "working_size"]

#: The authors' step numbers are counted on a 100-step schedule.
AUTHORS_STEPS = 100


def working_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) multiples of 8 with the input's aspect and the long side ``long_side`` pixels.

    ``long_side == 0`` keeps the input size, rounded to multiples of 8. The short side is at least 8.
    """
    if long_side <= 0:
        scale = 1.0
    else:
        scale = long_side / max(height, width)
    h = max(8, int(round(height * scale / 8.0)) * 8)
    w = max(8, int(round(width * scale / 8.0)) * 8)
    return h, w


@dataclass(frozen=True)
class InjectionSchedule:
    """Which keys/values the fusion branch takes at each denoising step (the authors' schedule).

    With k = max(j − 1, 0) for denoising step j (the authors' callback-set counter lags one step): no
    edit unless ``edit_from ≤ k < edit_until``; infrared K/V for k < ``infrared_until`` or for even
    k < ``infrared_even_until``; visible K/V for k < ``visible_until``; otherwise the fusion branch's own
    K/V. Contrast is applied whenever an edit runs.
    """

    edit_from: int = 1
    edit_until: int = 90
    infrared_until: int = 40
    infrared_even_until: int = 60
    visible_until: int = 70

    def source(self, step: int) -> Literal["infrared", "visible", "self"] | None:
        """K/V source of the fusion branch at denoising step ``step`` (0-based), or ``None`` for no edit."""
        k = max(step - 1, 0)
        if not self.edit_from <= k < self.edit_until:
            return None
        if k < self.infrared_until or (k % 2 == 0 and k < self.infrared_even_until):
            return "infrared"
        if k < self.visible_until:
            return "visible"
        return "self"

    def scaled(self, steps: int) -> InjectionSchedule:
        """The schedule for an ``steps``-step run (numbers are counted on the authors' 100 steps)."""
        return InjectionSchedule(*(scale_step(v, steps) for v in (
            self.edit_from, self.edit_until, self.infrared_until, self.infrared_even_until, self.visible_until)))


def scale_step(value: int, steps: int) -> int:
    """A step number of the authors' 100-step schedule, for a run of ``steps`` steps."""
    return int(round(value * steps / AUTHORS_STEPS))

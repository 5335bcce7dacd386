"""Logit lens: what every layer would predict, position by position, and where the answer forms.

One model run per (model, text), kept in the session; the pickers re-render from it. The page is
its list of sections (components/lens.py); the work is in playground.lens.
"""

from __future__ import annotations

from components import lens as sections

sections.start()
sections.intro()
model_id = sections.controls()
lm, result = sections.compute(model_id)
sections.grid(lm, result)
sections.position(lm, result)
sections.finish()

"""Prompt A/B: 2-4 prompt templates run over a set of inputs, side by side, with checks,
reference scores, a judge model, blind votes and a summary with confidence intervals;
every experiment is saved and can be reopened from a link.

The page is a list of sections (components/prompt_ab.py); the logic is in playground.experiments."""

from __future__ import annotations

import streamlit as st

from components import prompt_ab as ab
from components import state
from components.prompt_ab import K, defaults

ss = st.session_state
ab.restore_editors()
state.init(defaults(), {K.exp: "exp"})
db = ab.open_store()
ab.open_linked(db)

ab.intro()
ab.flash()
current = ab.saved_experiments(db)
templates = ab.templates()
inputs = ab.inputs(templates, current)
checks, check_problems = ab.checks()
controls = ab.run_controls(templates, inputs.rows)
ab.save_or_run(db, current, templates, inputs, checks, check_problems, controls)

if ss[K.exp]:
    state.to_url({K.exp: "exp"})
elif "exp" in st.query_params:
    del st.query_params["exp"]

ab.results(db, current, templates, inputs, controls.settings)

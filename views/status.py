"""Server status: sessions, the work queue and the memory budget, for whoever runs the demo.

The page is its list of sections (components/status.py), redrawn every few seconds.
"""

from __future__ import annotations

import streamlit as st

from components import server
from components import status as sections

REFRESH_SECONDS = 3

me = server.session_id()
sections.intro()


@st.fragment(run_every=REFRESH_SECONDS)
def live() -> None:
    sections.overview(me)
    sections.session_table(me)
    sections.job_table()
    sections.memory_tables()
    sections.start_up()


live()

"""Every page the router lists renders under AppTest with its defaults, and teaches.

House style: a page says what it shows, has a "How to read this" expander, and shows no
exception on first load with the bundled models.
"""

from __future__ import annotations

import pytest

from components import nav
from tests.conftest import ROOT, app_test

PAGES = [str(p.relative_to(ROOT)) for p, *_ in nav.existing()]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_defaults(page):
    at = app_test(None if page == "views/home.py" else page, timeout=300)
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    assert not at.error, f"{page} shows an error on first load: {[e.value for e in at.error]}"
    assert at.title or at.header, f"{page} has no title"
    labels = [e.label for e in at.expander]
    assert any("how to read" in label.lower() for label in labels), f"{page} has no 'How to read this' expander: {labels}"


def test_router_lists_only_existing_pages():
    listed = {p for p, *_ in nav.PAGES}
    assert "views/home.py" in listed
    for path, *_ in nav.existing():
        assert path.is_file()

"""The router, the home page and the sidebar's model picker (AppTest), and the app in Chromium."""

from __future__ import annotations

import pytest

from tests.conftest import app_test, screenshot, texts, wait_idle

BUNDLED = ["smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"]


def test_home_renders_and_lists_pages():
    at = app_test()
    assert not at.exception
    assert at.title[0].value == "LLM Playground"
    picker = at.sidebar.selectbox(key="model_id")
    labels = picker.options  # AppTest shows the formatted labels
    for name in ("SmolLM2 135M Instruct (bundled)", "Gemma 3 270M (base) (bundled)", "all-MiniLM-L6-v2 (bundled)",
                 "SmolLM2 135M Instruct · bf16 (bundled)", "SmolLM2 135M Instruct · int8 (bundled)"):
        assert name in labels
    assert picker.value == "smollm2-135m-instruct"
    assert "Bundled models" in texts(at)


@pytest.mark.parametrize(
    "model_id, expected",
    [
        ("smollm2-135m-instruct", ["30 × 9 (3 key/value)", "49,152", "8,192 tokens", "LlamaForCausalLM", "Chat template:** yes"]),
        ("gemma-3-270m", ["18 × 4 (1 key/value)", "262,144", "32,768 tokens", "Gemma3ForCausalLM", "Chat template:** no"]),
        ("all-minilm-l6-v2", ["6 × 12", "30,522", "512 tokens", "BertModel", "22.7M"]),
        ("smollm2-135m-instruct:int8", ["int8", "30 × 9"]),
    ],
)
def test_picking_each_model_shows_its_facts(model_id, expected):
    at = app_test()
    at.sidebar.selectbox(key="model_id").set_value(model_id).run()
    assert not at.exception
    shown = texts(at)
    for fact in expected:
        assert fact in shown, f"{fact!r} not shown for {model_id}"
    assert at.query_params["model"] == [model_id] or at.query_params["model"] == model_id


def test_unknown_hub_id_gives_a_clear_error():
    at = app_test()
    at.sidebar.text_input(key="sidebar_hub_id").set_value("not a model id").run()
    at.sidebar.button(key="sidebar_use_hub").click().run()
    assert not at.exception
    assert any("Unknown model" in e.value for e in at.sidebar.error)
    assert at.sidebar.selectbox(key="model_id").value == "smollm2-135m-instruct"


def test_bad_model_in_url_falls_back():
    at = app_test(query={"model": "nope"})
    assert not at.exception
    assert at.sidebar.selectbox(key="model_id").value in BUNDLED


@pytest.mark.browser
def test_app_in_chromium(app_url, page):
    page.goto(app_url)
    page.get_by_role("heading", name="LLM Playground", exact=True).wait_for()
    wait_idle(page)
    assert page.title() == "LLM Playground" or "LLM Playground" in page.title()
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("49,152").wait_for()  # SmolLM2's facts, the default model
    screenshot(page, "home")
    # open the picker and choose Gemma: its facts replace SmolLM2's
    sidebar.locator('[data-testid="stSelectbox"]').click()
    page.get_by_role("option", name="Gemma 3 270M (base) (bundled)").click()
    sidebar.get_by_text("262,144").wait_for()
    wait_idle(page)
    assert "model=gemma-3-270m" in page.url
    screenshot(page, "home-gemma")


@pytest.mark.browser
def test_what_was_typed_survives_a_visit_to_other_pages(app_url, page):
    """Streamlit drops a widget's value when another page runs; the app keeps and restores it."""
    page.goto(f"{app_url}/tokens")
    page.get_by_role("heading", name="Tokenization", exact=True).wait_for()
    wait_idle(page)
    text = page.locator("textarea").first
    text.fill("Text I typed on the tokenization page.")
    text.press("Control+Enter")
    page.get_by_text("typed", exact=True).wait_for()  # a token of the new text is drawn
    wait_idle(page)
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_role("link", name="Next token").click()
    page.get_by_role("heading", name="Next token", exact=True).wait_for()
    wait_idle(page)
    prompt = page.locator("textarea").first
    prompt.fill("My own prompt for the next token")
    prompt.press("Control+Enter")
    wait_idle(page)
    nav.get_by_role("link", name="Compare models").click()
    page.get_by_role("heading", name="Compare models", exact=True).wait_for()
    wait_idle(page)
    nav.get_by_role("link", name="Tokenization").click()
    page.get_by_role("heading", name="Tokenization", exact=True).wait_for()
    wait_idle(page)
    assert page.locator("textarea").first.input_value() == "Text I typed on the tokenization page."
    assert "text=Text+I+typed" in page.url  # and the link to the view says so again
    nav.get_by_role("link", name="Next token").click()
    page.get_by_role("heading", name="Next token", exact=True).wait_for()
    wait_idle(page)
    assert page.locator("textarea").first.input_value() == "My own prompt for the next token"


def test_hub_model_from_the_sidebar_downloads_and_shows_facts(hub_server):
    at = app_test()
    at.sidebar.text_input(key="sidebar_hub_id").set_value("tiny-org/tiny-bert-not-there").run()
    at.sidebar.button(key="sidebar_use_hub").click().run()
    assert at.session_state["model_id"] == "tiny-org/tiny-bert-not-there"
    at.sidebar.button(key="sidebar_download").click().run()
    assert any("not found on the Hub" in e.value for e in at.sidebar.error)
    at.sidebar.text_input(key="sidebar_hub_id").set_value("tiny-org/gated-llama").run()
    at.sidebar.button(key="sidebar_use_hub").click().run()
    at.sidebar.button(key="sidebar_download").click().run()
    assert any("gated" in e.value and "HF_TOKEN" in e.value for e in at.sidebar.error)
    at.sidebar.text_input(key="sidebar_hub_id").set_value("tiny-org/tiny-llama").run()
    at.sidebar.button(key="sidebar_use_hub").click().run()
    if "sidebar_download" in [b.key for b in at.sidebar.button]:
        at.sidebar.button(key="sidebar_download").click().run()
    assert not at.exception
    shown = texts(at)
    assert "2 × 4 (2 key/value)" in shown and "49,152" in shown and "LlamaForCausalLM" in shown
    # once downloaded it is in the picker's catalogue
    assert "tiny-llama (Hub)" in at.sidebar.selectbox(key="model_id").options


def test_page_values_come_back_after_other_pages_ran():
    """AppTest runs the same script runner as the server: values Streamlit drops when another page
    runs (including ones a page computes itself, not only its defaults) are restored."""
    from tests.conftest import ROOT

    at = app_test("views/tokens.py")
    at.text_area(key="tokens_text").set_value("Kept across pages.").run()
    at.session_state["tokens_view"] = "Side by side"  # the tab that draws the tokenizer picker
    at.run()
    at.multiselect(key="tokens_compare").set_value(["smollm2-135m-instruct", "all-minilm-l6-v2"]).run()
    for page in ("views/compare.py", "views/home.py"):
        at.switch_page(str(ROOT / page))
        at.run()
        assert not at.exception
        assert at.title[0].value != "Tokenization"  # another page ran
    at.switch_page(str(ROOT / "views/tokens.py"))
    at.run()
    assert at.text_area(key="tokens_text").value == "Kept across pages."
    assert at.multiselect(key="tokens_compare").value == ["smollm2-135m-instruct", "all-minilm-l6-v2"]

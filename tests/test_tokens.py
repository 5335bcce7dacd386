"""Tokenization: the core on the three bundled tokenizers over hard strings, the page (AppTest)
and the page in Chromium.

The bundled tokenizers are three kinds: byte-level BPE (SmolLM2), SentencePiece BPE with byte
fallback (Gemma 3) and WordPiece (MiniLM). What each promises differs, and the tests say so
where a promise does not hold.
"""

from __future__ import annotations

import time

import pytest
from tokenizers import Tokenizer

from playground import tokens as T
from playground.errors import InputError
from playground.loading import prepare
from tests.conftest import app_test, screenshot, texts, wait_idle

SMOL, GEMMA, MINILM = "smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"
BUNDLED = [SMOL, GEMMA, MINILM]

HARD = {
    "empty": "",
    "whitespace runs": "   \t\t  \n\n\n   x  \r\n  ",
    "control chars": "a\x00b\x07c\x1bd\x7fe\x0c",
    "arabic": "مرحبا بالعالم، كيف حالك؟",
    "hebrew": "שָׁלוֹם עוֹלָם",
    "mixed direction": "abc مرحبا 123 שלום def",
    "bidi controls": "\u202eabc\u202c \u200e\u200f \u2066x\u2069",
    "emoji zwj": "👨‍👩‍👧‍👦 🏳️‍🌈 🧑🏽‍🚀 ❤️‍🔥",
    "combining marks": "e\u0301 a\u0308\u0323 Z\u0324\u0308 n\u0303o\u0301",
    "zalgo": "h\u0335\u0321e\u0336\u0322l\u0337l\u0338o\u0334",
    "cjk": "日本語のテキストと中文和한국어",
    "code": "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\tif x != 0: pass\n",
    "long word": "Pneumonoultramicroscopicsilicovolcanoconiosis" * 20,
    "one letter many times": "a" * 5000,
    "numbers": "3.14159 1,000,000 2024-05-01 0x1F -42e-3",
    "typed special tokens": "<|im_end|> <bos> [CLS] <end_of_turn>",
    "cleanup spaces": " hello . world , (x) don 't ",
    "rare code points": "\U0010FFFF \U0001F600 𓀀 ꙮ \ue000",
    "compatibility forms": "ﬁ ligature Ⅻ ① ｆｕｌｌ",
    "zero width": "a\u200bb\ufeffc\u2060d",
}
# The one hard string Gemma cannot give back: SentencePiece writes a space as U+2581 '▁', so a
# literal '▁' in the text becomes the same piece as a space and decodes as a space.
SPM_MARKER = "a\u2581b ▁▁c"


@pytest.fixture(scope="module")
def toks(smollm2, gemma, minilm):
    """The bundled tokenizers, from the session's loaded models (shared with the rest of the suite)."""
    return {SMOL: smollm2.tokenizer, GEMMA: gemma.tokenizer, MINILM: minilm.tokenizer}


@pytest.fixture(scope="module")
def raw():
    """The `tokenizers` library's own tokenizer, read from each model's tokenizer.json."""
    out = {}
    for m in BUNDLED:
        t = Tokenizer.from_file(str(prepare(m) / "tokenizer.json"))
        t.no_padding()  # MiniLM's file pads and truncates to 128 for sentence embeddings
        t.no_truncation()
        out[m] = t
    return out


# --- the core ---------------------------------------------------------------------------------


def test_schemes(toks):
    assert T.byte_scheme(toks[SMOL]) == T.BYTE_LEVEL
    assert T.byte_scheme(toks[GEMMA]) == T.BYTE_FALLBACK
    assert T.byte_scheme(toks[MINILM]) == T.TEXT


@pytest.mark.parametrize("model", BUNDLED)
def test_ids_equal_the_tokenizers_library(model, toks, raw):
    for name, text in {**HARD, "marker": SPM_MARKER}.items():
        tk = T.tokenize(toks[model], text, model_id=model)
        assert list(tk.ids) == raw[model].encode(text, add_special_tokens=True).ids, name
        assert [t.id for t in tk.tokens] == list(tk.ids)
        assert [t.piece for t in tk.tokens] == raw[model].encode(text, add_special_tokens=True).tokens, name
        assert tk.complete


def test_shared_minilm_tokenizer_neither_truncates_nor_changes():
    """MiniLM's file truncates to 128; a freshly loaded tokenizer (the app shares it between
    sessions) does not, before any call, and tokenizing leaves its settings as they were."""
    from playground.loading import load_tokenizer

    tok = load_tokenizer(MINILM)
    assert tok.backend_tokenizer.truncation is None and tok.backend_tokenizer.padding is None
    long_text = "word " * 400
    assert len(T.tokenize(tok, long_text, model_id=MINILM).ids) == 402  # [CLS] + 400 + [SEP]
    assert len(tok(long_text)["input_ids"]) == 402
    assert tok.backend_tokenizer.truncation is None and tok.backend_tokenizer.padding is None


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_decode_encode_round_trip(model, toks):
    """Byte-level BPE and byte-fallback SentencePiece promise to give any text back."""
    tok = toks[model]
    for name, text in HARD.items():
        tk = T.tokenize(tok, text, add_special_tokens=False)
        assert T.decode(tok, list(tk.ids)).text == text if tk.ids else text == "", name
    back = T.decode(tok, list(T.tokenize(tok, SPM_MARKER, add_special_tokens=False).ids)).text
    if model == SMOL:
        assert back == SPM_MARKER
    else:  # documented above: '▁' is Gemma's space
        assert back == SPM_MARKER.replace("\u2581", " ")


def test_wordpiece_does_not_round_trip_and_says_why(toks):
    """MiniLM's WordPiece lower-cases, strips accents, drops control characters, collapses
    whitespace, separates punctuation and turns what its vocabulary lacks into [UNK]: decoding
    gives the normalized text, not the text. What it does promise: each token's piece is the
    normalized form of the characters its offsets point at."""
    tok = toks[MINILM]
    text = "Crème  Brûlée, naïve\tCAFÉ!"
    tk = T.tokenize(tok, text, add_special_tokens=False)
    assert T.decode(tok, list(tk.ids)).text == "creme brulee, naive cafe!"
    assert T.decode(tok, list(tk.ids)).text != text
    normalizer = tok.backend_tokenizer.normalizer
    for name, text in HARD.items():
        tk = T.tokenize(tok, text)
        # tokens that share offsets come from one character (accent stripping splits Hangul into jamo)
        groups: dict[tuple[int, int], list[str]] = {}
        for t in tk.tokens:
            if t.added or t.id == tok.unk_token_id or t.is_special:
                continue
            groups.setdefault((t.start, t.end), []).append(t.piece.removeprefix("##"))
            assert t.bytes == text[t.start:t.end].encode()
        for (s, e), pieces in groups.items():
            assert normalizer.normalize_str(text[s:e]).strip() == "".join(pieces), (name, text[s:e], pieces)
    assert not T.tokenize(tok, "Hi there").bytes_match_text  # the space is in no token


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_bytes_put_together_are_the_text(model, toks):
    for name, text in HARD.items():
        tk = T.tokenize(toks[model], text)
        joined = b"".join(t.bytes for t in tk.tokens if not t.added)
        assert joined == text.encode("utf-8"), name
        assert tk.bytes_match_text
    if model == GEMMA:  # the literal '▁' comes back as a space byte, as decode shows
        assert not T.tokenize(toks[model], SPM_MARKER).bytes_match_text


@pytest.mark.parametrize("model", BUNDLED)
def test_offsets_point_at_the_right_characters(model, toks):
    for name, text in HARD.items():
        tk = T.tokenize(toks[model], text)
        for t in tk.tokens:
            assert 0 <= t.start <= t.end <= len(text), (name, t)
            assert t.text == text[t.start:t.end]
            if t.added:
                assert t.start == t.end and t.bytes == b"" and t.is_special
                continue
            if model == MINILM:
                continue  # normalized pieces: see test_wordpiece_does_not_round_trip_and_says_why
            if t.partial:  # part of a multi-byte character: its bytes sit inside the characters it covers
                assert t.bytes in t.text.encode("utf-8"), (name, t)
            else:
                assert t.bytes.decode("utf-8") == t.text, (name, t)
        starts = [t.start for t in tk.tokens if not t.added]
        assert starts == sorted(starts)


def test_an_emoji_split_over_byte_tokens_is_shown_honestly(toks):
    text = "I 👨‍👩‍👧"
    tk = T.tokenize(toks[SMOL], text)
    partial = [t for t in tk.tokens if t.partial]
    assert len(partial) >= 3
    first = next(t for t in tk.tokens if t.bytes.endswith(b"\xf0\x9f"))
    assert first.piece == "ĠðŁ" and first.text == " 👨" and first.hex == "20 F0 9F"
    assert b"".join(t.bytes for t in tk.tokens) == text.encode()
    # Gemma has whole pieces for these, or falls back to <0x..> bytes for rarer characters
    g = T.tokenize(toks[GEMMA], "𓀀")
    assert [t.piece for t in g.tokens if not t.added] == ["<0xF0>", "<0x93>", "<0x80>", "<0x80>"]
    assert [t.hex for t in g.tokens if not t.added] == ["F0", "93", "80", "80"]


def test_counts_and_context(toks):
    text = "Hello world 👋"
    tk = T.tokenize(toks[GEMMA], text, context_length=32_768)
    assert tk.count == len(toks[GEMMA](text)["input_ids"])
    assert tk.added_count == 1 and tk.tokens[0].piece == "<bos>"
    assert tk.text_tokens == tk.count - 1
    assert tk.chars == 13 and tk.n_bytes == 16
    assert tk.chars_per_token == pytest.approx(13 / tk.text_tokens)
    assert tk.context_fill == pytest.approx(tk.count / 32_768)
    m = T.tokenize(toks[MINILM], text)
    assert [t.piece for t in m.tokens if t.added] == ["[CLS]", "[SEP]"] and m.added_count == 2
    # typed special tokens are parsed as special tokens, not as text
    s = T.tokenize(toks[SMOL], "a<|im_end|>b")
    assert [t.piece for t in s.tokens] == ["a", "<|im_end|>", "b"]
    assert s.tokens[1].is_special and not s.tokens[1].added and s.tokens[1].text == "<|im_end|>"
    assert s.special_count == 1 and s.added_count == 0


def test_big_text_is_fast_or_refused(toks):
    text = ("Tokenizers are fast. " * 50_000)[:1_000_000]  # a 1 MB paste
    t0 = time.perf_counter()
    tk = T.tokenize(toks[SMOL], text, detail_chars=10_000)
    took = time.perf_counter() - t0
    assert tk.count == len(toks[SMOL](text, verbose=False)["input_ids"]) > 200_000
    assert not tk.complete and tk.tokens[-1].start < 10_000 <= tk.detail_chars + 25
    assert took < 30, f"tokenizing 1 MB took {took:.1f} s"
    with pytest.raises(InputError, match=r"2,097,153 bytes of UTF-8 .* limit is 2,097,152"):
        T.tokenize(toks[SMOL], "a" * (T.MAX_TEXT_BYTES - 1) + "é")
    with pytest.raises(InputError, match="lone surrogate"):
        T.tokenize(toks[SMOL], "a\ud800b")


def test_read_text_file():
    assert T.read_text_file("héllo 👋".encode()) == "héllo 👋"
    assert T.read_text_file(b"\xef\xbb\xbfBOM") == "BOM"
    with pytest.raises(InputError, match=r"notes.txt is not UTF-8: byte 0xe9 at position 4 \(line 2, column 2\)"):
        T.read_text_file("ab\ncaf".encode() [:4] + b"\xe9 latin-1", "notes.txt")
    assert T.read_text_file("hi".encode("utf-16")) == "hi"  # a UTF-16 byte-order mark says what the bytes are
    with pytest.raises(InputError, match="NUL bytes"):
        T.read_text_file(b"ab\x00cd")
    with pytest.raises(InputError, match="limit"):
        T.read_text_file(b"a" * (T.MAX_TEXT_BYTES + 1))


def test_compare_lines_boundaries_up(toks):
    text = "Hello 👨‍👩‍👧 naïve tokenizers!"
    tks = [T.tokenize(toks[m], text, model_id=m) for m in BUNDLED]
    c = T.compare(tks)
    assert c.model_ids == tuple(BUNDLED) and c.complete
    assert "".join(s.text for s in c.segments) == text
    for s in c.segments:
        for cut in s.cuts:
            for t in cut:
                assert s.start <= t.start and t.end <= s.end
    assert sum(len(s.cuts[0]) for s in c.segments) == tks[0].text_tokens
    family = next(s for s in c.segments if "👨" in s.text)
    assert not family.agree and len(family.cuts[0]) > len(family.cuts[1])  # byte pieces vs whole emoji
    hello = c.segments[0]
    assert hello.text == "Hello" and hello.agree
    assert 0 < c.differing < len(c.segments)
    same = T.compare([tks[0], tks[0]])  # a tokenizer agrees with itself everywhere
    assert same.differing == 0
    with pytest.raises(InputError, match="different texts"):
        T.compare([tks[0], T.tokenize(toks[SMOL], "other")])


@pytest.mark.parametrize(
    "messages, gen",
    [
        ([{"role": "user", "content": "What is 2+2?"}], True),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 👋"}], True),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! ¿Qué tal?"}], False),
    ],
)
def test_chat_template_string_is_the_tokenizers(messages, gen, toks):
    tok = toks[SMOL]
    chat = T.render_chat(tok, messages, model_id=SMOL, add_generation_prompt=gen)
    assert chat.has_template
    assert chat.text == tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
    assert list(chat.tokenization.ids) == tok(chat.text, add_special_tokens=False)["input_ids"]
    for t in chat.tokenization.specials:
        assert chat.text[t.start:t.end] == t.piece
    assert chat.end_of_turn == "<|im_end|>" and chat.end_of_sequence == "<|im_end|>"
    assert [chat.text[s:e] for s, e in chat.content_spans] == [m["content"] for m in messages]
    assert chat.template_tokens + chat.content_tokens == chat.tokenization.count
    if messages[0]["role"] != "system":  # SmolLM2 then adds its own system prompt
        assert "You are a helpful AI assistant named SmolLM" in chat.text


def test_template_overhead_counts_what_the_template_adds(toks):
    tok = toks[SMOL]
    chat = T.render_chat(tok, [T.Message("user", "Hi")])
    content = T.tokenize(tok, "Hi", add_special_tokens=False).count
    assert chat.content_tokens == content == 1
    assert chat.template_tokens == chat.tokenization.count - 1 > 20


def test_model_without_chat_template_says_so(toks):
    chat = T.render_chat(toks[GEMMA], [T.Message("system", "Be brief."), T.Message("user", "Hi there")], model_id=GEMMA)
    assert not chat.has_template and chat.text == "Hi there"
    assert "no chat template" in chat.note and "system" in chat.note
    assert chat.tokenization.tokens[0].piece == "<bos>" and chat.template_tokens == 1
    assert chat.end_of_sequence == "<eos>" and chat.end_of_turn is None
    with pytest.raises(InputError, match="role 'robot'"):
        T.render_chat(toks[SMOL], [{"role": "robot", "content": "x"}])
    with pytest.raises(InputError, match="No messages"):
        T.render_chat(toks[SMOL], [])
    with pytest.raises(InputError, match="200,001 characters together; the limit is 200,000"):
        T.render_chat(toks[SMOL], [T.Message("user", "x" * 200_001)])


def test_decode_names_bad_ids(toks):
    tok = toks[SMOL]
    ids = list(T.tokenize(tok, "Hello 👋", add_special_tokens=False).ids)
    d = T.decode(tok, ", ".join(map(str, ids)))
    assert d.text == "Hello 👋" and d.ids == tuple(ids)
    assert T.decode(tok, f"[{ids[0]} {ids[1]}]").ids == tuple(ids[:2])
    assert T.decode(tok, [1]).special == (True,)
    with pytest.raises(InputError, match=r"outside the vocabulary of x \(0 to 49,151\): 49,152, -3"):
        T.decode(tok, [5, 49_152, 7, -3], model_id="x")
    with pytest.raises(InputError, match=r"Not integer ids: 'abc', '1.5'"):
        T.decode(tok, "1, abc, 1.5")
    with pytest.raises(InputError, match="No ids"):
        T.decode(tok, " , ")
    with pytest.raises(InputError, match="0 to 262,143"):
        T.decode(toks[GEMMA], [262_144])


# --- the page (AppTest) -----------------------------------------------------------------------

PAGE = "views/tokens.py"


def metric(at, label: str) -> str:
    found = [m.value for m in at.main.metric if m.label == label]
    assert found, f"no metric {label!r}; metrics: {[m.label for m in at.main.metric]}"
    return found[0]


def spans_html(at) -> str:
    return "".join(h.proto.body for h in at.main.get("html"))


def count(toks, model: str, text: str) -> str:
    return f"{T.tokenize(toks[model], text).count:,}"


def test_page_main_flow(toks):
    at = app_test(PAGE)
    assert not at.exception
    DEFAULT_TEXT = at.text_area(key="tokens_text").value
    # first load: the sidebar's model and the default text, whose counts differ across tokenizers
    assert at.selectbox(key="tokens_model").value == SMOL
    assert metric(at, "Tokens") == count(toks, SMOL, DEFAULT_TEXT)
    assert metric(at, "Characters") == f"{len(DEFAULT_TEXT):,}"
    assert metric(at, "Bytes") == f"{len(DEFAULT_TEXT.encode()):,}"
    assert len({count(toks, m, DEFAULT_TEXT) for m in BUNDLED}) == 3
    assert "Context window: " in texts(at) or any("Context window" in str(p.proto.text) for p in at.main.get("progress"))
    assert spans_html(at).count('<span class="t') == T.tokenize(toks[SMOL], DEFAULT_TEXT).count

    at.text_area(key="tokens_text").set_value("Hello 👋 <b>world</b>").run()
    assert not at.exception
    assert metric(at, "Tokens") == count(toks, SMOL, "Hello 👋 <b>world</b>")
    body = spans_html(at)
    assert "&lt;" in body and "<b>" not in body  # escaped, never markup
    assert '<span class="hx">F0 9F</span>' in body  # the emoji's first bytes, shown honestly
    assert at.query_params["text"] in ("Hello 👋 <b>world</b>", ["Hello 👋 <b>world</b>"])

    at.toggle(key="tokens_ids").set_value(True).run()
    first = T.tokenize(toks[SMOL], "Hello 👋 <b>world</b>").ids[0]
    assert f'<span class="id">{first}</span>' in spans_html(at)
    at.toggle(key="tokens_ids").set_value(False).run()
    at.toggle(key="tokens_whitespace").set_value(True).run()
    assert '<span class="mk">·</span>' in spans_html(at)

    at.selectbox(key="tokens_model").set_value(GEMMA).run()
    assert not at.exception
    assert metric(at, "Tokens") == count(toks, GEMMA, "Hello 👋 <b>world</b>")
    assert "&lt;bos&gt;" in spans_html(at)
    at.toggle(key="tokens_special").set_value(False).run()
    assert "&lt;bos&gt;" not in spans_html(at)
    assert metric(at, "Tokens") == count(toks, GEMMA, "Hello 👋 <b>world</b>")  # still counted
    assert at.query_params["tokenizer"] in (GEMMA, [GEMMA]) and at.query_params["special"] in ("false", ["false"])

    # side by side: each tokenizer's count, and the stretches cut differently
    at.session_state["tokens_view"] = "Side by side"
    at.run()
    assert not at.exception
    for m in BUNDLED:
        labels = {mm.label: mm.value for mm in at.main.metric}
        from components.tokens import model_label
        assert labels[model_label(m)] == f"{count(toks, m, 'Hello 👋 <b>world</b>')} tokens"
    assert "stretches are cut differently" in texts(at)
    assert "seg diff" in spans_html(at)

    # chat template: SmolLM2's exact string; Gemma says it has none
    at.selectbox(key="tokens_model").set_value(SMOL)
    at.session_state["tokens_view"] = "Chat template"
    at.run()
    assert not at.exception
    user = at.text_area(key="tokens_chat_user").value
    expected = toks[SMOL].apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)
    assert at.main.code[0].value == expected
    assert metric(at, "Prompt tokens") == f"{len(toks[SMOL](expected, add_special_tokens=False)['input_ids']):,}"
    assert "End of turn: `<|im_end|>`" in texts(at)
    at.text_area(key="tokens_chat_system").set_value("Be brief.").run()
    assert "You are a helpful AI assistant" not in at.main.code[0].value and "Be brief." in at.main.code[0].value
    at.selectbox(key="tokens_model").set_value(GEMMA).run()
    assert any("no chat template" in i.value for i in at.main.info)
    assert at.main.code[0].value == user

    # decode: ids back to text, and an error naming ids outside the vocabulary
    at.session_state["tokens_view"] = "Decode ids"
    at.run()
    at.text_input(key="tokens_decode_ids").set_value("9259, 300000, -1").run()
    assert not at.exception
    assert any("300,000" in e.value and "-1" in e.value for e in at.main.error)
    ids = ", ".join(map(str, T.tokenize(toks[GEMMA], "Bonjour 👋", add_special_tokens=False).ids))
    at.text_input(key="tokens_decode_ids").set_value(ids).run()
    assert at.main.code[0].value == "Bonjour 👋"


def test_page_bad_input_and_links(toks):
    at = app_test(PAGE, query={"tokenizer": MINILM, "text": "Hello World", "ids": "true"})
    assert not at.exception
    assert at.selectbox(key="tokens_model").value == MINILM  # the link reproduces the view
    assert at.text_area(key="tokens_text").value == "Hello World"
    assert metric(at, "Tokens") == count(toks, MINILM, "Hello World") == "4"
    assert '<span class="id">101</span>' in spans_html(at)

    # a file that is not UTF-8: a clear message, and the text is kept
    at.file_uploader(key="tokens_upload").set_value(("latin1.txt", "café".encode("latin-1"), "text/plain")).run()
    assert not at.exception
    assert any("latin1.txt is not UTF-8: byte 0xe9" in e.value for e in at.main.error)
    assert at.text_area(key="tokens_text").value == "Hello World"
    at.file_uploader(key="tokens_upload").set_value(("notes.txt", "naïve 👋\n".encode(), "text/plain")).run()
    assert at.text_area(key="tokens_text").value == "naïve 👋\n"
    assert metric(at, "Tokens") == count(toks, MINILM, "naïve 👋\n")

    # every hard string at once, through WordPiece and byte-level BPE: drawn, escaped, counted
    hard = "".join(HARD.values())
    at.toggle(key="tokens_ids").set_value(False)
    at.text_area(key="tokens_text").set_value(hard).run()
    assert not at.exception and metric(at, "Tokens") == count(toks, MINILM, hard)
    body = spans_html(at)  # controls and bidi overrides are drawn as marks, never sent raw
    assert "\x00" not in body and "\u202e" not in body and "⟨U+202E⟩" in body
    at.selectbox(key="tokens_model").set_value(SMOL).run()
    assert not at.exception and metric(at, "Tokens") == count(toks, SMOL, hard)
    body = spans_html(at)
    assert "\x00" not in body and "\u202e" not in body and "␀" in body
    # SmolLM2 has no piece for U+202E: its bytes are split over tokens, named (not drawn) on hover
    assert "part of a multi-byte character: U+202E RIGHT-TO-LEFT OVERRIDE" in body
    assert "&lt;|im_end|&gt;" in body  # the typed special token, escaped

    # empty text, then a text over the limit: an answer or a clear message, never a traceback
    at.text_area(key="tokens_text").set_value("").run()
    assert not at.exception and metric(at, "Tokens") == "0"  # SmolLM2 adds no special token
    big = "x" * (T.MAX_TEXT_BYTES + 10)
    at.text_area(key="tokens_text").set_value(big).run()
    assert not at.exception
    assert any("limit is 2,097,152 bytes" in e.value for e in at.main.error)
    assert at.text_area(key="tokens_text").value == big  # nothing lost
    assert "text" not in at.query_params  # too long for a link


# --- the page in Chromium -----------------------------------------------------------------------


@pytest.mark.browser
def test_tokens_page_in_chromium(app_url, page, toks):
    page.set_viewport_size({"width": 1400, "height": 1800})
    page.goto(f"{app_url}/tokens")
    page.get_by_role("heading", name="Tokenization", exact=True).wait_for()
    page.get_by_text("Characters per token").first.wait_for()
    wait_idle(page)
    tokens_metric = page.locator('[data-testid="stMetric"]').filter(has_text="Tokens").first
    shown = tokens_metric.locator('[data-testid="stMetricValue"]').inner_text()
    text = page.locator("textarea").first.input_value()
    assert shown == f"{T.tokenize(toks[SMOL], text).count:,}"
    spans = page.locator(".tkv .t")
    assert spans.count() == int(shown.replace(",", ""))
    split = page.locator(".tkv .t.pt").first  # part of a multi-byte character, with its bytes on hover
    assert "part of a multi-byte character" in split.get_attribute("title")
    assert "bytes (" in split.get_attribute("title")
    screenshot(page, "tokens")

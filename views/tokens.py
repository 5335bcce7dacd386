"""Tokenization: how a model cuts text into tokens, tokenizers side by side, chat templates, decoding ids."""

from __future__ import annotations

import contextlib

import streamlit as st

from components import cache, state
from components import tokens as view
from components.models import require_tokenizer
from playground import loading
from playground import tokens as core
from playground import links
from playground.links import Link
from playground.errors import PlaygroundError, describe
from playground.registry import DEFAULT_EMBEDDER, DEFAULT_BASE_MODEL, DEFAULT_CHAT_MODEL, get_model, list_models, split_variant


class K:
    model = "tokens_model"
    text = "tokens_text"
    upload = "tokens_upload"
    upload_message = "tokens_upload_message"
    sidebar_seen = "tokens_sidebar_seen"  # the sidebar pick this page last followed
    whitespace = "tokens_whitespace"
    special = "tokens_special"
    ids = "tokens_ids"
    view = "tokens_view"
    compare = "tokens_compare"
    system = "tokens_chat_system"
    user = "tokens_chat_user"
    assistant = "tokens_chat_assistant"
    generation = "tokens_chat_generation_prompt"
    decode = "tokens_decode_ids"


TABS = ["Tokens", "Side by side", "Chat template", "Decode ids"]
URL = {K.model: Link("tokenizer", links.Model()), K.whitespace: Link("ws", links.Flag()),
       K.special: Link("special", links.Flag()), K.ids: Link("ids", links.Flag()), K.view: Link("view", links.Choice(tuple(TABS)))}
TEXT_LINK = Link("text", links.Text())
URL_TEXT_MAX = links.LINK_TEXT_MAX  # longer texts are not put in the link
DETAIL_CHARS = 10_000  # characters drawn as spans; counts cover the whole text
COMPARE_CHARS = 3_000  # characters lined up side by side
BIG_TEXT = 100_000  # above this many characters, say what is happening

DEFAULT_TEXT = (
    "Tokenizers don't read words, they read pieces: naïve café, Ελληνικά, 東京は晴れ, مرحبا بالعالم.\n"
    "The family emoji 👨‍👩‍👧 is 5 code points and 18 bytes; 1,234,567.89 is a number.\n"
    "def area(r):\n    return 3.14159 * r ** 2  # tokens cost money\n"
)
DEFAULT_USER = "What is the capital of France? Answer in one word."
DEFAULT_DECODE = "Hello, world! 👋"


def catalogue() -> list[str]:
    try:
        return [s.id for s in list_models(include_variants=False)]
    except Exception:  # noqa: BLE001 - a broken Hub cache must not break the page
        return [s.id for s in list_models(include_variants=False, include_cached_hub=False)]


def context_length(model_id: str) -> int | None:
    try:
        return cache.facts(model_id).context_length or None
    except Exception:  # noqa: BLE001 - the bar is left out, the tokens still show
        return None


def load_upload() -> None:
    """Put an uploaded file's text in the text box, or say why not (the typed text stays)."""
    upload = st.session_state.get(K.upload)
    if upload is None:
        return
    try:
        st.session_state[K.text] = core.read_text_file(upload.getvalue(), upload.name)
        st.session_state[K.upload_message] = ("success", f"Loaded {upload.name} ({upload.size:,} bytes).")
    except PlaygroundError as exc:
        st.session_state[K.upload_message] = ("error", describe(exc))


def text_to_url(text: str) -> None:
    if text == DEFAULT_TEXT or len(text) > URL_TEXT_MAX:
        if "text" in st.query_params:
            del st.query_params["text"]
    elif st.query_params.get("text") != text:
        st.query_params["text"] = text


def compare_to_url(ids: list[str]) -> None:
    joined = ",".join(ids)
    if st.query_params.get("vs") != joined:
        st.query_params["vs"] = joined


# --- state ---------------------------------------------------------------------------------

options = catalogue()
sidebar_pick = split_variant(state.current_model())[0]
state.init(
    {K.model: sidebar_pick, K.text: DEFAULT_TEXT, K.whitespace: False, K.special: True, K.ids: False,
     K.view: TABS[0], K.system: "", K.user: DEFAULT_USER, K.assistant: "", K.generation: True},
    {**URL, K.text: TEXT_LINK},
)
if st.session_state.get(K.sidebar_seen, sidebar_pick) != sidebar_pick:
    st.session_state[K.model] = sidebar_pick  # a new pick in the sidebar: follow it
st.session_state[K.sidebar_seen] = sidebar_pick
state.keep(K.compare, K.decode)
if K.compare not in st.session_state:
    wanted = [m for m in links.read("vs", st.query_params.get("vs", ""), links.Text(), "").value.split(",") if m]
    unknown = [m for m in wanted if m not in options]
    if unknown:
        st.warning(f"The link asked to compare {', '.join(map(repr, unknown[:8]))}, which "
                   f"{'is' if len(unknown) == 1 else 'are'} not in the catalogue; "
                   f"{'the others are compared' if len(unknown) < len(wanted) else 'the default tokenizers are compared'}.")
    st.session_state[K.compare] = [m for m in wanted if m in options] or [DEFAULT_CHAT_MODEL, DEFAULT_BASE_MODEL, DEFAULT_EMBEDDER]
try:
    get_model(st.session_state[K.model])
except PlaygroundError as exc:
    st.warning(f"{describe(exc)} Showing {sidebar_pick} instead.")
    st.session_state[K.model] = sidebar_pick
st.session_state[K.model] = split_variant(st.session_state[K.model])[0]  # variants share a tokenizer
if st.session_state[K.model] not in options:
    options.append(st.session_state[K.model])

# --- page ----------------------------------------------------------------------------------

st.title("Tokenization")
st.write(
    "A model never sees text: it sees a list of token ids. Here is exactly how each tokenizer cuts your text, "
    "what every piece is made of (down to its bytes), why the same sentence costs different numbers of tokens "
    "in different models, and what a chat template really sends."
)
with st.expander("How to read this"):
    st.markdown(
        "- **Coloured spans** are tokens, in the order the model reads them. Hover over one for its **id**, its "
        "**piece** as the vocabulary stores it, its **character offsets** and its **UTF-8 bytes**.\n"
        "- **Byte-level BPE** (SmolLM2) stores every byte as a printable character: `Ġ` is a space, `Ċ` a newline. "
        "A rare character such as an emoji can be split over several tokens; such a token holds *part* of a "
        "character, shown as its bytes in hex (`F0 9F`) with a dashed border.\n"
        "- **SentencePiece** (Gemma) writes a space as `▁` and falls back to byte tokens `<0xF0>` for characters "
        "its 262k vocabulary lacks. **WordPiece** (MiniLM) lower-cases and strips accents first, marks word "
        "continuations with `##`, drops whitespace (grey text is in no token) and writes `[UNK]` for what it cannot spell.\n"
        "- **Dark spans** are special tokens: `<bos>`, `[CLS]`/`[SEP]` added by the tokenizer, or `<|im_end|>` typed in "
        "the text (a tokenizer parses them as control tokens, not as text!).\n"
        "- Right-to-left text keeps the tokens in reading order for the model, left to right.\n"
        "- **Side by side** lines tokenizers up where all of them cut; stretches they cut differently are outlined in red.\n"
        "- Try: a word in another language, a long number, repeated spaces, code indentation, `<|im_end|>`, and compare counts."
    )

top = st.columns([2, 1, 1, 1])
top[0].selectbox("Tokenizer", options, key=K.model, format_func=view.model_label,
                 help="Starts with the model picked in the sidebar. Precision variants share their tokenizer.")
top[1].toggle("Whitespace", key=K.whitespace, help="Spaces as ·, tabs as →, newlines as ↵, invisible characters named.")
top[2].toggle("Special tokens", key=K.special, help="The special tokens the tokenizer adds (<bos>, [CLS], [SEP]).")
top[3].toggle("Ids, not text", key=K.ids, help="Each token as the number the model receives.")

model_id = st.session_state[K.model]
if get_model(model_id).source == "hub" and loading.local_folder(model_id) is None:
    st.info(f"{model_id} is not downloaded yet. Download it from the sidebar (pick it there), "
            "or pick a bundled tokenizer here.")
    st.stop()
tokenizer = require_tokenizer(model_id)

st.text_area("Text", key=K.text, height=170, help=f"Up to {core.MAX_TEXT_BYTES // 2**20} MiB of UTF-8.")
st.file_uploader("…or upload a text file (UTF-8)", type=["txt", "md", "py", "json", "csv", "html", "js", "ts", "c", "rs", "go", "java", "yaml", "toml"],
                 key=K.upload, on_change=load_upload)
if st.session_state.get(K.upload_message):  # shown once, on the run right after the upload
    kind, message = st.session_state.pop(K.upload_message)
    (st.error if kind == "error" else st.success)(message)

text = st.session_state[K.text]
state.to_url(URL)
text_to_url(text)
compare_to_url(st.session_state[K.compare])
if len(text) > URL_TEXT_MAX:
    st.caption(f"The text is over {URL_TEXT_MAX:,} characters, so the link keeps the settings but not the text.")

tabs = st.tabs(TABS, key=K.view, on_change="rerun")

with tabs[0]:
    if tabs[0].open:
        try:
            with st.spinner(f"Tokenizing {len(text):,} characters…", show_time=True) if len(text) > BIG_TEXT else contextlib.nullcontext():
                tk = cache.tokenization(model_id, text, DETAIL_CHARS, context_length(model_id))
        except PlaygroundError as exc:
            st.error(describe(exc))
        else:
            view.render_counts(tk)
            view.render_tokens(tk, show_whitespace=st.session_state[K.whitespace],
                               show_special=st.session_state[K.special], show_ids=st.session_state[K.ids])
            if tk.byte_scheme == core.TEXT and tk.ids:
                st.caption("This tokenizer normalizes text first, so its pieces differ from the text; "
                           "a token's bytes are those of the characters it covers.")
            with st.expander("Token table"):
                st.dataframe(view.token_table(tk), hide_index=True)

with tabs[1]:
    if tabs[1].open:
        st.multiselect("Tokenizers to compare", options, key=K.compare, format_func=view.model_label,
                       help="The same text through each; pick two or more.")
        picked = st.session_state[K.compare]
        if len(picked) < 2:
            st.info("Pick at least two tokenizers to line them up.")
        else:
            results = []
            with st.spinner(f"Tokenizing with {len(picked)} tokenizers…"):
                for mid in picked:
                    try:
                        results.append(cache.tokenization(mid, text, COMPARE_CHARS, context_length(mid)))
                    except PlaygroundError as exc:
                        st.error(f"{view.model_label(mid)}: {describe(exc)}")
                    except Exception as exc:  # noqa: BLE001 - one broken tokenizer must not hide the others
                        st.error(f"{view.model_label(mid)}: {describe(exc)}")
            if len(results) >= 2:
                view.render_comparison(core.compare(results))

with tabs[2]:
    if tabs[2].open:
        st.caption(f"Messages for **{view.model_label(model_id)}**. Leave the system message empty to see "
                   "whether the template adds its own.")
        st.text_area("System", key=K.system, height=68)
        st.text_area("User", key=K.user, height=68)
        st.text_area("Assistant (optional: a reply already given)", key=K.assistant, height=68)
        st.checkbox("Add the generation prompt (the opening of the assistant's turn)", key=K.generation)
        messages = [core.Message(role, st.session_state[key]) for role, key in
                    (("system", K.system), ("user", K.user), ("assistant", K.assistant))
                    if st.session_state[key] or role == "user"]
        try:
            chat = core.render_chat(tokenizer, messages, model_id=model_id,
                                    add_generation_prompt=st.session_state[K.generation],
                                    context_length=context_length(model_id))
        except PlaygroundError as exc:
            st.error(describe(exc))
        else:
            view.render_chat(chat)

with tabs[3]:
    if tabs[3].open:
        if K.decode not in st.session_state:
            sample = core.tokenize(tokenizer, DEFAULT_DECODE, add_special_tokens=False)
            st.session_state[K.decode] = ", ".join(str(i) for i in sample.ids)
        st.text_input("Token ids", key=K.decode, help="Separated by commas or spaces; brackets are fine.")
        try:
            decoded = core.decode(tokenizer, st.session_state[K.decode], model_id=model_id)
        except PlaygroundError as exc:
            st.error(describe(exc))
        else:
            view.render_decoded(decoded)

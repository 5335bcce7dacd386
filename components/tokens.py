"""Rendering tokenizations: coloured token spans with hover details, counts and the context bar,
tokenizers lined up side by side, chat prompts and decoded ids.

Every piece of text that reaches HTML goes through `html.escape` (a token can be `<script>`);
characters that would be invisible or would reorder the line (control characters, bidi
overrides) are drawn as visible marks, and each span is a bidi isolate so right-to-left text
keeps the tokens in the order the model reads them.

What it leaves out: tokenizing (playground.tokens) and loading tokenizers (components.cache).
"""

from __future__ import annotations

import html
import unicodedata

import pandas as pd
import streamlit as st

from components.format import human_bytes
from playground.registry import get_model
from playground.tokens import BYTE_LEVEL, BYTE_FALLBACK, ChatPrompt, Comparison, Decoded, Token, Tokenization, char_name

MAX_SPANS = 3_000  # token spans drawn at most; counts always cover the whole text
MAX_SEGMENTS = 1_500  # comparison segments drawn at most
TABLE_ROWS = 2_000

PALETTE = ["#dbeafe", "#fde68a", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc", "#e5e7eb"]
ROW_COLOURS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2"]

CSS = """
<style>
.tkv{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9rem;line-height:2.1;
     white-space:pre-wrap;word-break:break-word;color:#1c1b22}
.tkv .t{border-radius:3px;padding:1px 1px;margin-right:1px;unicode-bidi:isolate;border:1px solid rgba(0,0,0,.10)}
.tkv .t:hover{outline:2px solid #6c4cf5}
.tkv .sp{background:#3b2a7a!important;color:#fff;font-weight:600}
.tkv .pt{border:1px dashed #b45309}
.tkv .hx{font-size:.72em;background:#fef3c7;color:#92400e;border-radius:2px;padding:0 2px;margin:0 1px}
.tkv .mk{color:#8b8797}
.tkv .gap{color:#8b8797;unicode-bidi:isolate}
.tkv .id{font-size:.85em}
.tkv .legend{font-family:sans-serif;font-size:.85rem;margin-bottom:.4rem;white-space:normal}
.tkv .legend b{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em;border-radius:2px}
.tkv .seg{display:inline-flex;flex-direction:column;vertical-align:top;margin:0 3px 6px 0;padding:1px;
          border-radius:4px;line-height:1.7;white-space:pre}
.tkv .seg.diff{background:#fff1f2;outline:1px solid #f43f5e}
.tkv .row{display:block;border-left:3px solid #ccc;padding-left:2px;min-height:1.7em}
.tkv .none{color:#b4b0bf}
</style>
"""

_BIDI_CONTROLS = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))
_NAMES = {0x200B: "ZWSP", 0x200C: "ZWNJ", 0x200D: "ZWJ", 0x200E: "LRM", 0x200F: "RLM", 0x2060: "WJ",
          0xFEFF: "BOM", 0x00AD: "SHY", 0xFE0F: "VS16", 0xFE0E: "VS15"}
_WS = {" ": "·", "\t": "→", "\n": "↵", "\r": "␍", "\u00a0": "⍽"}


def model_label(model_id: str) -> str:
    try:
        return get_model(model_id).label
    except Exception:  # noqa: BLE001 - a label must never break a page
        return model_id


def _mark(text: str) -> str:
    return f'<span class="mk">{html.escape(text)}</span>'


def visible(text: str, show_whitespace: bool, line_breaks: bool = True) -> str:
    """HTML for `text`: escaped; controls and bidi overrides always drawn, whitespace on request."""
    out: list[str] = []
    for i, ch in enumerate(text):
        o = ord(ch)
        if show_whitespace and ch in _WS:
            out.append(_mark(_WS[ch]) + ("\n" if ch == "\n" and line_breaks else ""))
        elif ch == "\n":  # always marked: a newline token would otherwise be an empty sliver
            out.append(_mark("↵") + ("\n" if line_breaks else ""))
        elif o < 0x20 and ch not in "\n\t" or o == 0x7F:
            out.append(_mark(chr(0x2400 + o) if o < 0x20 else "␡"))
        elif 0x80 <= o < 0xA0:
            out.append(_mark(f"⟨U+{o:04X}⟩"))
        elif o in _BIDI_CONTROLS or (show_whitespace and (o in _NAMES or unicodedata.category(ch) in ("Zs", "Cf"))):
            out.append(_mark(f"⟨{_NAMES.get(o, f'U+{o:04X}')}⟩"))
        elif i == 0 and unicodedata.category(ch).startswith("M"):
            out.append(html.escape("◌" + ch))  # a combining mark with nothing before it to sit on
        else:
            out.append(html.escape(ch))
    return "".join(out)


def _byte_text(token: Token, show_whitespace: bool, line_breaks: bool) -> str:
    """A byte-level token: its whole characters as text, the bytes of a split character as hex."""
    raw = token.bytes.decode("utf-8", errors="surrogateescape")
    out, run, hexes = [], [], []
    for ch in raw:
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            if run:
                out.append(visible("".join(run), show_whitespace, line_breaks))
                run = []
            hexes.append(f"{ord(ch) - 0xDC00:02X}")
        else:
            if hexes:
                out.append(f'<span class="hx">{" ".join(hexes)}</span>')
                hexes = []
            run.append(ch)
    if run:
        out.append(visible("".join(run), show_whitespace, line_breaks))
    if hexes:
        out.append(f'<span class="hx">{" ".join(hexes)}</span>')
    return "".join(out)


def label_html(token: Token, scheme: str, show_whitespace: bool = False, show_ids: bool = False,
               line_breaks: bool = True) -> str:
    """What a span shows for one token."""
    if show_ids:
        return f'<span class="id">{token.id}</span>'
    if token.is_special:  # <bos>, <|im_end|>, and [UNK] rather than the characters it stands for
        return html.escape(token.piece)
    if scheme in (BYTE_LEVEL, BYTE_FALLBACK) and not token.is_special:
        return _byte_text(token, show_whitespace, line_breaks) or _mark("∅")
    return visible(token.text or token.piece, show_whitespace, line_breaks) or _mark("∅")


def title_text(token: Token) -> str:
    """The hover text of one token: id, piece, offsets, bytes, and what is special about it."""
    shown = token.text if len(token.text) <= 40 else token.text[:40] + "…"
    lines = [
        f"#{token.index}  id {token.id}",
        f"piece: {token.piece!r}",
        f"chars {token.start}–{token.end}: {shown!r}" if not token.added else "added by the tokenizer (not in the text)",
        f"bytes ({len(token.bytes)}): {token.hex or '—'}",
    ]
    if token.partial:
        chars = ", ".join(
            f"{c} {char_name(c)}" if c.isprintable() and not unicodedata.category(c).startswith("M") else char_name(c)
            for c in dict.fromkeys(token.text) if len(c.encode()) > 1
        )
        lines.append(f"part of a multi-byte character: {chars}")
    if token.is_special:
        lines.append("special token")
    return "\n".join(lines)


def _span(token: Token, scheme: str, show_whitespace: bool, show_ids: bool, colour: int, line_breaks: bool = True) -> str:
    cls = "t sp" if token.is_special else "t"
    if token.partial:
        cls += " pt"
    style = "" if token.is_special else f' style="background:{PALETTE[colour % len(PALETTE)]}"'
    label = label_html(token, scheme, show_whitespace, show_ids, line_breaks)
    body = label.rstrip("\n")  # a line break goes after the span, so the span stays on one line
    return (f'<span class="{cls}"{style} title="{html.escape(title_text(token), quote=True)}">'
            f"{body}</span>" + "\n" * (len(label) - len(body)))


def tokens_html(tk: Tokenization, *, show_whitespace: bool = False, show_special: bool = True,
                show_ids: bool = False, max_tokens: int = MAX_SPANS) -> str:
    """The text as coloured token spans; text no token covers (dropped by the tokenizer) in grey."""
    parts = [CSS, '<div class="tkv">']
    pos = 0
    for token in tk.tokens[:max_tokens]:
        if token.added and not show_special:
            continue
        if not token.added and token.start > pos and not show_ids:
            gap = tk.text[pos:token.start]
            parts.append(f'<span class="gap" title="in no token: the tokenizer drops it">{visible(gap, show_whitespace)}</span>')
        parts.append(_span(token, tk.byte_scheme, show_whitespace, show_ids, token.index))
        if show_ids:
            parts.append(" ")
        if not token.added:
            pos = max(pos, token.end)
    parts.append("</div>")
    return "".join(parts)


def render_tokens(tk: Tokenization, *, show_whitespace: bool = False, show_special: bool = True,
                  show_ids: bool = False) -> None:
    if not tk.ids:
        st.caption("No tokens: the text is empty.")
        return
    st.html(tokens_html(tk, show_whitespace=show_whitespace, show_special=show_special, show_ids=show_ids))
    drawn = min(len(tk.tokens), MAX_SPANS)
    if drawn < tk.count:
        st.caption(f"Showing the first {drawn:,} of {tk.count:,} tokens; the counts above cover the whole text.")


def render_counts(tk: Tokenization) -> None:
    """Tokens, characters, bytes, characters per token, and the context-window bar."""
    cols = st.columns(5)
    extra = f"{tk.added_count} added by the tokenizer" if tk.added_count else "none added"
    cols[0].metric("Tokens", f"{tk.count:,}", help=f"Every id the model receives ({extra}; {tk.special_count} special in all).")
    cols[1].metric("Characters", f"{tk.chars:,}", help="Unicode code points (an emoji family is several).")
    cols[2].metric("Bytes", f"{tk.n_bytes:,}", help=f"UTF-8: {human_bytes(tk.n_bytes)}.")
    cols[3].metric("Characters per token", f"{tk.chars_per_token:.2f}", help="Higher means the tokenizer packs more text per token.")
    cols[4].metric("Vocabulary", f"{tk.vocab_size:,}")
    fill = tk.context_fill
    if fill is not None:
        st.progress(min(fill, 1.0), text=f"Context window: {tk.count:,} of {tk.context_length:,} tokens ({fill:.1%})")
        if fill > 1:
            st.warning(f"This text is {tk.count:,} tokens; the model's context window is {tk.context_length:,}. "
                       "The model would not see all of it.")


def token_table(tk: Tokenization, rows: int = TABLE_ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "#": [t.index for t in tk.tokens[:rows]],
            "id": [t.id for t in tk.tokens[:rows]],
            "piece": [t.piece for t in tk.tokens[:rows]],
            "text": [t.text for t in tk.tokens[:rows]],
            "start": [t.start for t in tk.tokens[:rows]],
            "end": [t.end for t in tk.tokens[:rows]],
            "bytes": [t.hex for t in tk.tokens[:rows]],
            "special": [t.is_special for t in tk.tokens[:rows]],
            "partial character": [t.partial for t in tk.tokens[:rows]],
        }
    )


# --- side by side ---------------------------------------------------------------------------


def comparison_html(c: Comparison, labels: list[str], max_segments: int = MAX_SEGMENTS) -> str:
    """Segments between common boundaries, one row per tokenizer; segments cut differently outlined red."""
    legend = "".join(
        f'<b style="background:{ROW_COLOURS[k % len(ROW_COLOURS)]}"></b>row {k + 1}: {html.escape(label)}'
        for k, label in enumerate(labels)
    )
    parts = [CSS, f'<div class="tkv"><div class="legend">{legend}</div>']
    for seg in c.segments[:max_segments]:
        what = "cut the same way" if seg.agree else "cut differently"
        title = f"chars {seg.start}–{seg.end}: {seg.text[:40]!r} — {what}"
        parts.append(f'<span class="seg{"" if seg.agree else " diff"}" title="{html.escape(title, quote=True)}">')
        for k, (cut, tk) in enumerate(zip(seg.cuts, c.tokenizations)):
            parts.append(f'<span class="row" style="border-left-color:{ROW_COLOURS[k % len(ROW_COLOURS)]}">')
            if not cut:
                parts.append('<span class="none" title="no token: this tokenizer drops these characters">∅</span>')
            for token in cut:
                parts.append(_span(token, tk.byte_scheme, True, False, token.index, line_breaks=False))
            parts.append("</span>")
        parts.append("</span>")
    parts.append("</div>")
    return "".join(parts)


def comparison_table(c: Comparison) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tokenizer": [model_label(t.model_id) for t in c.tokenizations],
            "tokens": [t.count for t in c.tokenizations],
            "added special": [t.added_count for t in c.tokenizations],
            "characters per token": [round(t.chars_per_token, 2) for t in c.tokenizations],
            "bytes per token": [round(t.n_bytes / t.text_tokens, 2) if t.text_tokens else 0.0 for t in c.tokenizations],
            "vocabulary": [t.vocab_size for t in c.tokenizations],
            "bytes exact": [t.bytes_match_text for t in c.tokenizations],
        }
    )


def render_comparison(c: Comparison) -> None:
    labels = [model_label(t.model_id) for t in c.tokenizations]
    cols = st.columns(len(c.tokenizations))
    for col, label, tk in zip(cols, labels, c.tokenizations):
        col.metric(label, f"{tk.count:,} tokens", help=f"{tk.chars_per_token:.2f} characters per token")
    st.dataframe(comparison_table(c), hide_index=True)
    st.caption(
        f"{c.differing:,} of {len(c.segments):,} stretches are cut differently (outlined in red). "
        "A stretch ends where every tokenizer ends a token."
    )
    if c.segments:
        st.html(comparison_html(c, labels))
    shown = min(len(c.segments), MAX_SEGMENTS)
    if not c.complete or shown < len(c.segments):
        upto = c.segments[shown - 1].end if shown else 0
        st.caption(f"Lined up over the first {upto:,} of {len(c.tokenizations[0].text):,} characters; the counts cover the whole text.")


# --- chat and decode ------------------------------------------------------------------------


def exact_code(text: str) -> None:
    """`st.code` of `text` exactly: st.code drops one leading and one trailing newline, so pad them."""
    body = ("\n" if text.startswith("\n") else "") + text + ("\n" if text.endswith("\n") else "")
    st.code(body or " ", language=None, wrap_lines=True)


def render_chat(chat: ChatPrompt) -> None:
    tk = chat.tokenization
    cols = st.columns(4)
    cols[0].metric("Prompt tokens", f"{tk.count:,}")
    cols[1].metric("Template tokens", f"{chat.template_tokens:,}", help="Tokens outside every message's text: roles, markers, special tokens, a default system prompt.")
    cols[2].metric("Message tokens", f"{chat.content_tokens:,}")
    cols[3].metric("Characters", f"{tk.chars:,}")
    if not chat.has_template:
        st.info(chat.note)
    ends = []
    if chat.end_of_turn:
        ends.append(f"End of turn: `{chat.end_of_turn}`")
    if chat.end_of_sequence:
        same = " (the same token)" if chat.end_of_sequence == chat.end_of_turn else ""
        ends.append(f"End of sequence: `{chat.end_of_sequence}`{same}")
    specials = {}
    for t in tk.specials:
        specials[t.piece] = specials.get(t.piece, 0) + 1
    if specials:
        ends.append("Special tokens in this prompt: " + ", ".join(f"`{p}` ×{n}" for p, n in specials.items()))
    if ends:
        st.markdown(" · ".join(ends))
    st.caption("The exact string the model receives:")
    exact_code(chat.text)
    st.caption("…and its tokens (special tokens dark; whitespace shown):")
    st.html(tokens_html(tk, show_whitespace=True))


def render_decoded(d: Decoded) -> None:
    st.caption(f"{len(d.ids):,} ids → {len(d.text):,} characters (special tokens kept, spaces not cleaned up):")
    exact_code(d.text)
    st.dataframe(
        pd.DataFrame({"id": list(d.ids[:TABLE_ROWS]), "piece": list(d.pieces[:TABLE_ROWS]), "special": list(d.special[:TABLE_ROWS])}),
        hide_index=True,
    )

"""An answer drawn token by token: hover a token for its probability and the model's top
alternatives, switch on a shading of the tokens the model was unsure of, click a token to open
the Next token page at exactly the prefix it was chosen after (same model, same settings).

`answer_html(...)` builds the HTML (every token, tooltip and link through `html.escape`: a
model's answer can hold `<script>`); `show(...)` draws it; `shading_control(key)` is the switch.
A page calls `show` where it printed the answer's text, and keeps printing the text when the
engine gave no per-token probabilities (a server that does not return them).

What it leaves out: computing anything (playground.answers) and the Next token page itself.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import streamlit as st

from playground import answers
from playground.answers import AnswerToken, Origin
from playground.engines import TokenLogprob

SHADES = ("off", "low probability", "high entropy")
SHADE_HELP = ("Off: the answer as text, each token still hoverable and clickable. "
              "Low probability: the less likely the model found a token, the darker its background "
              "(full at 1 in 256, 8 bits of surprisal). High entropy: the more the model hesitated between "
              "tokens at that step, the darker (full at 4 bits, about 16 equally likely tokens).")
FULL_SURPRISAL_BITS = 8.0  # the shading saturates at p = 1/256
FULL_ENTROPY_BITS = 4.0  # ... and at about 16 equally likely choices
TIP_ALTERNATIVES = 8  # alternatives listed in a token's tooltip
SHADE_RGB = "234,88,12"  # orange: stands out on the light theme without meaning "wrong"


def visible(text: str) -> str:
    """A token with its whitespace made visible, for a tooltip: ' the' -> '␣the', '\\n' -> '↵'."""
    if text == "":
        return "∅"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def pct(p: float) -> str:
    if p >= 0.001:
        return f"{100 * p:.1f}%"
    return f"{p:.1e}" if p > 0 else "0%"


def uncertainty(t: AnswerToken, shade: str) -> float:
    """0 (sure) to 1 (the shading's darkest) for one token under the chosen shading."""
    if shade == "low probability":
        return min(1.0, t.surprisal_bits / FULL_SURPRISAL_BITS)
    if shade == "high entropy":
        return 0.0 if math.isnan(t.entropy_bits) else min(1.0, t.entropy_bits / FULL_ENTROPY_BITS)
    return 0.0


def tooltip(t: AnswerToken, linked: bool) -> str:
    """The hover text of one token: itself, its probability and rank, the step's entropy, the top alternatives."""
    rank = f"rank {t.rank}" if t.rank is not None else f"not in the top {len(t.alternatives)}"
    lines = [f"{visible(t.text)}  {pct(t.probability)} ({rank})"]
    if t.alternatives:
        lines.append(f"entropy ≥ {t.entropy_bits:.2f} bits")
        lines.append("the model's top choices here:")
        lines += [f"  {visible(a)}  {pct(p)}" for a, p in t.alternatives[:TIP_ALTERNATIVES]]
    if linked:
        lines.append("click: open Next token at this point")
    return "\n".join(lines)


def _escape(text: str) -> str:
    """HTML-escaped, with new lines as character references: the HTML stays one line, so markdown
    never ends its HTML block at a blank line inside an answer."""
    return html.escape(text, quote=True).replace("\r", "&#13;").replace("\n", "&#10;")


def answer_html(logprobs: Sequence[TokenLogprob], token_ids: Sequence[int], origin: Origin | None,
                shade: str = "off", special_ids: frozenset[int] = frozenset()) -> str:
    """The answer as spans, one per token, each with its tooltip and (when there is an origin) its link."""
    spans = []
    for t in answers.tokens(logprobs):
        link = answers.href(origin, token_ids, t.index) if t.token_id is not None else None
        u = uncertainty(t, shade)
        style = "white-space:pre-wrap;border-radius:3px;color:inherit;text-decoration:none"
        if u > 0:
            style += f";background:rgba({SHADE_RGB},{0.08 + 0.62 * u:.3f})"
        if t.token_id in special_ids:  # a control token (end of turn): shown, but not part of the text
            style += ";color:#8a8799;font-size:0.8em"
        tip = _escape(tooltip(t, link is not None))
        body = _escape(t.text)
        if link is not None:
            spans.append(f'<a class="answer-token" href="{html.escape(link, quote=True)}" target="_blank" '
                         f'title="{tip}" data-index="{t.index}" style="{style}">{body}</a>')
        else:
            spans.append(f'<span class="answer-token" title="{tip}" data-index="{t.index}" style="{style}">{body}</span>')
    return ('<div class="answer-tokens" style="line-height:1.7;font-size:0.95em">' + "".join(spans) + "</div>")


def shading_control(key: str, where=None) -> str:
    """The switch for the uncertainty shading; returns one of SHADES."""
    where = where or st
    value = where.radio("Uncertainty shading", SHADES, key=key, horizontal=True, help=SHADE_HELP)
    return value if value in SHADES else "off"


def caption(origin: Origin | None, n_tokens: int) -> str:
    how = "Hover a token for its probability and the model's top alternatives"
    if origin is None:
        return how + ". (No links to Next token here: that page cannot rebuild this prompt exactly.)"
    if n_tokens > answers.MAX_WALK:
        return how + f"; click one of the first {answers.MAX_WALK} to open Next token at that point."
    return how + "; click one to open Next token at that point, with the same model and settings."


def show(logprobs: Sequence[TokenLogprob], token_ids: Sequence[int], origin: Origin | None, text: str,
         shade: str = "off", where=None) -> None:
    """The answer token by token in `where` (a container), or its plain text when there are no probabilities."""
    where = where or st
    if not logprobs:
        where.text(text or "(no text)")
        return
    box = where.container()
    box.markdown(answer_html(logprobs, token_ids, origin, shade), unsafe_allow_html=True)
    box.caption(caption(origin, len(logprobs)))

"""Constrained decoding on the pages: the constraint's inputs, the Next token page's section
(the walk and the bars under a constraint), the tool-call example, and the verdicts under
Compare's answers.

Every key a widget here uses is `<prefix>_...`, so each page has its own. The algorithms are in
playground.constrain; this module reads widgets, calls it and draws.

What it leaves out: the bars themselves (components.distribution greys and hatches the rows a
`ConstrainedView` forbids) and the streamed columns (components.compare).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import streamlit as st

from components import state
from playground import constrain as con
from playground import limits, links
from playground.links import Link
from playground.errors import PlaygroundError, describe

EXAMPLES = {
    "json": json.dumps({"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                                         "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                        "required": ["name", "age"], "additionalProperties": False}, indent=1),
    "regex": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "choices": "positive\nnegative\nneutral",
}
WALK_BUDGET = 256  # tokens a constrained walk may take (the steps a link may carry, too)


class Keys:
    """The widget keys of one page's constraint inputs."""

    def __init__(self, prefix: str) -> None:
        self.on = f"{prefix}_on"
        self.kind = f"{prefix}_kind"
        self.text = {k: f"{prefix}_text_{k}" for k in con.KINDS}
        self.example = f"{prefix}_example"


def url_links(k: Keys) -> dict:
    """The link parameters of one page's constraint: on, kind, and the kind's text (a long schema
    stays out of the link, and the page says so, as any long text)."""
    bounds = {"json": limits.SCHEMA_CHARS, "regex": limits.REGEX_CHARS, "choices": limits.CHOICE_CHARS}
    return {k.on: Link("constrain", links.Flag()), k.kind: Link("constrain_kind", links.Choice(tuple(con.KINDS))),
            **{k.text[kind]: Link(f"constrain_{kind}", links.Text(bounds[kind].value)) for kind in con.KINDS}}


def inputs(prefix: str, where=st, help_on: str = "") -> con.ConstraintSpec | None:
    """The toggle, the kind and its text box. The checked spec, or None (off, or shown as an error).
    The choices are kept in the page's link."""
    k = Keys(prefix)
    url = url_links(k)
    state.init({k.on: False, k.kind: "json", **{k.text[kind]: EXAMPLES[kind] for kind in con.KINDS}}, url)
    if st.session_state[k.on]:  # in the link only while on: a page without a constraint keeps a short link
        state.to_url({key: link for key, link in url.items() if key in (k.on, k.kind, k.text[st.session_state[k.kind]])})
    else:
        for link in url.values():
            st.query_params.pop(link.param, None)
    where.toggle("Constrain the answer", key=k.on, help=help_on or "Limit every token to those that keep the text "
                 "inside a JSON schema, a regex or a list of choices.")
    if not st.session_state[k.on]:
        return None
    where.radio("Kind", con.KINDS, key=k.kind, format_func=con.KIND_NAMES.get, horizontal=True)
    kind = st.session_state[k.kind]
    bound = {"json": limits.SCHEMA_CHARS, "regex": limits.REGEX_CHARS, "choices": limits.CHOICE_CHARS}[kind]
    label = {"json": "JSON schema", "regex": "Regex (the whole answer must match; Rust regex syntax)",
             "choices": "Choices, one per line (as typed: start one with a space to follow a word)"}[kind]
    where.text_area(label, key=k.text[kind], height=160 if kind == "json" else 80,
                    help=f"{bound.text}" + (f", {limits.CONSTRAINT_CHOICES.text}" if kind == "choices" else ""))
    try:
        return con.parse(kind, st.session_state[k.text[kind]])
    except PlaygroundError as exc:
        where.error(describe(exc))
        return None


# --- the Next token page -----------------------------------------------------------------------

@dataclass
class Active:
    """A constraint in force on the walk: `take` and `view` are stepping's, under it."""

    guide: con.Guide

    def take(self, walk, dist, tokenizer, how, settings, token_id=None):
        return con.constrained_take(walk, dist, tokenizer, how, settings, self.guide, token_id)

    def view(self, dist, settings, tokenizer, n):
        return con.constrained_view(dist, settings, tokenizer, n, self._guide_after(dist.input_ids))

    def _guide_after(self, ids) -> con.Guide:
        """The guide after the walk's tokens as they are now (a step may have been taken since)."""
        n_prompt = self.prompt_len
        if tuple(ids[n_prompt:]) == self.walk_ids:
            return self.guide
        return con.Guide(self.guide.grammar, ids[n_prompt:])

    prompt_len: int = 0
    walk_ids: tuple[int, ...] = ()


def next_token_section(lm, prompt_ids, walk, prefix: str = "next_token_constrain") -> Active | None:
    """The constraint on the Next token page: inputs, compiled for model A's tokenizer and followed
    along the walk so far. None when off, or when it cannot apply (said on the page)."""
    st.subheader("Constrain the next token")
    st.write("Limit the walk to text that fits a JSON schema, a regex or a list of choices. At each step the "
             "constraint forbids every token that would break it: those bars turn grey and hatched, the rest are "
             "renormalised, and every step (sampled, greedy or picked) takes an allowed token.")
    spec = inputs(prefix)
    if spec is None:
        return None
    from playground.stepping import eos_ids

    try:
        grammar = con.compile_for(spec, lm.tokenizer, sorted(eos_ids(lm)), WALK_BUDGET)
        guide = con.Guide(grammar, walk.token_ids)
    except PlaygroundError as exc:
        st.error(describe(exc) + (" Reset the walk to start it under this constraint." if walk.steps else ""))
        return None
    st.caption(f"{spec.label} compiled for {lm.spec.label}'s {grammar.vocab_size:,}-token vocabulary by llguidance. "
               f"It applies before temperature and the filters; the second model, if any, is not constrained. "
               f"An answer is at most {WALK_BUDGET} tokens, and the last ones close it.")
    return Active(guide, len(prompt_ids), tuple(walk.token_ids))


def mass_caption(v, where=st) -> None:
    """Under the bars of a constrained view: how much the constraint removed (nothing for a plain view)."""
    if not isinstance(v, con.ConstrainedView):
        return
    done = " The text so far is a complete answer: the end of text is allowed." if v.complete else ""
    where.caption(f"**Constraint:** {v.n_allowed:,} of {v.vocab_size:,} tokens allowed; the forbidden ones held "
                  f"**{100 * v.removed_mass:.1f}%** of the model's probability, which the allowed ones share "
                  f"out. {len(v.forbidden)} of the bars shown are forbidden (grey, hatched).{done}")


# --- the tool-call example ---------------------------------------------------------------------

def tool_call_section(lm, prefix: str = "next_token_tool") -> None:
    """A function's schema, the model's constrained call streamed token by token, its arguments parsed."""
    from playground import generate as gen

    kq, kr, kres = f"{prefix}_question", f"{prefix}_run", f"{prefix}_result"
    state.init({kq: "What is the weather like in Paris today, in celsius?"})
    with st.expander("A function call, token by token"):
        st.write("Calling a model from a program means getting output a program can read. Here the model must call "
                 "`get_weather(city, unit)`: its answer is constrained to the JSON of a call, so it always parses and "
                 "validates. Whether the arguments make sense is the model's own doing: the constraint guarantees the "
                 "form, never the content. A 135M model may copy the city from the question, or write another one, "
                 "and may pick the wrong unit; try a question about Tokyo in fahrenheit, or Gemma (a base model "
                 "with no chat template).")
        left, right = st.columns(2)
        left.markdown("**The function** (as the model is shown it)")
        left.json(con.WEATHER_TOOL, expanded=1)
        right.markdown("**The schema its answer must fit**")
        right.json(con.tool_call_schema(), expanded=1)
        st.text_input("Question", key=kq, max_chars=limits.CELL_CHARS.value)
        pressed = st.button("Call the function", key=kr, type="primary", icon=":material/function:")
        if pressed:
            spec = con.parse("json", json.dumps(con.tool_call_schema()))
            settings = gen.GenerationSettings(max_new_tokens=64, temperature=0.0)
            try:
                s = gen.stream(lm, con.tool_call_prompt(st.session_state[kq]), settings, constraint=spec)
                box = st.empty()
                pieces: list[str] = []
                for chunk in s:
                    pieces.extend(lm.tokenizer.decode([i]) for i in chunk.token_ids)
                    box.markdown(token_chips(pieces), unsafe_allow_html=True)
                st.session_state[kres] = (st.session_state[kq], lm.spec.id, pieces, s.result.text,
                                          con.check_answer(spec, s.result.text), s.result.finish_reason)
            except PlaygroundError as exc:
                st.error(describe(exc))
        held = st.session_state.get(kres)
        if held and held[1] == lm.spec.id:
            question, _, pieces, text, verdict, finish = held
            if not pressed:
                st.markdown(token_chips(pieces), unsafe_allow_html=True)
            st.caption(f"{len(pieces)} tokens ({finish}), each box one token, for the question {question!r}.")
            st.markdown(verdict_text(verdict, "json"))
            if verdict.valid:
                args = verdict.value["arguments"]
                st.markdown("**Arguments parsed**")
                st.dataframe([{"argument": k, "value": v} for k, v in args.items()], hide_index=True,
                             key=f"{prefix}_args")


def token_chips(pieces: list[str]) -> str:
    spans = "".join(f'<span style="border:1px solid #b9b2ef;border-radius:4px;padding:0 2px;margin:1px;'
                    f'background:#f3f0ff;white-space:pre">{html.escape(p)}</span>' for p in pieces if p)
    return f'<div style="font-family:ui-monospace,Menlo,monospace;line-height:2">{spans}</div>'


# --- Compare -----------------------------------------------------------------------------------

def verdict_text(v: con.Verdict, kind: str) -> str:
    if kind == "json":
        return (f"parses {'✓' if v.parses else '✗'} / validates {'✓' if v.valid else '✗'}"
                + (f" — {v.detail}" if v.detail else ""))
    return f"fits the constraint {'✓' if v.valid else '✗'}" + (f" — {v.detail}" if v.detail else "")


def verdicts(spec: con.ConstraintSpec, runs) -> None:
    """One line under each column of a finished comparison: does its answer parse and validate."""
    cols = st.columns(len(runs), gap="medium")
    for col, run in zip(cols, runs):
        if run.error:
            col.caption("no answer to check")
            continue
        v = con.check_answer(spec, run.text)
        (col.success if v.valid else col.error)(verdict_text(v, spec.kind), icon=":material/data_object:")


def cannot_constrain(model_ids) -> str | None:
    """One line for the picked entries a constraint cannot run on (a server's model), or None."""
    from playground.engines import why_not
    from playground.registry import get_model
    from components.pickers import label

    out = [label(m) for m in model_ids if why_not(get_model(m), "constrained")]
    if not out:
        return None
    return f"{', '.join(out)}: {why_not(get_model(next(m for m in model_ids if why_not(get_model(m), 'constrained'))), 'constrained')}"

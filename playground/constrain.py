"""Constrained decoding: the next token is limited to those that keep the text inside a JSON
schema, a regex, or a list of choices.

The grammar-to-token-mask step is `llguidance` (Microsoft's Low-level Guidance, the library
behind constrained output in llama.cpp, vLLM, SGLang and transformers). It was picked over the
other candidates on this stack:

- it installs as one binary wheel (abi3, Rust) with no dependency of its own, so torch stays
  at the pinned CPU build; `xgrammar` pulls triton (and its own torch expectations);
- it reads a transformers fast tokenizer as it is (`llguidance.hf.from_tokenizer`): SmolLM2's
  GPT-2 byte-level BPE and Gemma 3's 262k SentencePiece vocabulary with byte fallback both
  work, with every token's bytes right, special tokens kept apart;
- a mask costs about a millisecond per step on both vocabularies, and a grammar compiles in
  milliseconds: its Earley parser and lazy lexer never build a token-level automaton, where
  `outlines-core` spends seconds indexing a schema against 262k tokens before the first step
  (2.4 s for a two-field schema here) and `lm-format-enforcer` walks the vocabulary in Python;
- its JSON-schema coverage is the widest of them, and an invalid schema or regex, and some
  unsatisfiable schemas, come back as an error message we can show.

`parse(kind, text)` checks what a person typed (sizes from playground.limits; a schema must be
JSON and a valid JSON schema, `jsonschema` says where it is not). `compile_for(spec, tokenizer,
eos_ids, budget)` gives a `Grammar` for one tokenizer; `Guide(grammar)` follows one answer:
`allowed()` is the (V,) mask of the next token, `advance(id)` takes one, `choose(...)` picks one
under the sampling settings. `LogitsProcessor` does that inside `model.generate` for
playground.generate; the llama.cpp engine calls `Guide.choose` itself.

**The answer always finishes.** A mask alone does not stop a model from writing a string
until `max_new_tokens` cuts it, leaving JSON that does not parse. So every `Guide` holds a
*witness*: a sequence of tokens that would complete the answer from where it is (found by a
greedy walk over single-byte tokens that prefers closing characters: `"`, `}`, `]`, digits),
which fits in the tokens left. A token is taken only if a witness still fits after it;
otherwise the next best is tried, and at worst the witness's own next token is taken. The
budget never runs out in the middle, so an answer that reaches its end parses. A constraint that
cannot finish within the budget at all is refused before the first token, with the number.
Regexes and choices are bounded in characters by the budget inside the grammar too (llguidance's
`&` of two lexemes), so the greedy walk cannot loop. JSON is compact (no free whitespace: a small
model otherwise fills its budget with newlines).

What it leaves out: the model (playground.generate and the engines run it), rendering
(components/constrain.py), and grammars other than these three kinds (llguidance's Lark
grammars would fit the same `Grammar`; no page asks for them yet).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from playground import limits
from playground.errors import InputError
from playground.stepping import NextTokenView

KINDS = ("json", "regex", "choices")
KIND_NAMES = {"json": "JSON schema", "regex": "Regex", "choices": "One of a list"}
KIND_NOUNS = {"json": "JSON schema", "regex": "regex", "choices": "list of choices"}
ALLOWED_SHOWN = 5  # allowed tokens a constrained view adds below the top ones when they are not among them
MAX_TRIES = 8  # tokens tried against the witness before the witness's own token is taken

# Bytes the witness walk tries, in this order: what closes JSON first, then what fills it.
_PRIORITY = (b'"}]0123456789,:' + bytes(range(ord("a"), ord("z") + 1)) + bytes(range(ord("A"), ord("Z") + 1))
             + b" -._/@+" + bytes(b for b in range(33, 127) if chr(b) not in '"}]0123456789,:-._/@+'
                                 and not chr(b).isalnum()) + b"\n")
_PRIORITY = _PRIORITY + bytes(b for b in range(256) if b not in _PRIORITY)


class ConstraintError(InputError):
    """A constraint is invalid, unsatisfiable, or an answer broke it."""


# --- what a person writes ------------------------------------------------------------------

@dataclass(frozen=True)
class ConstraintSpec:
    """A constraint as typed: its kind and its text (a schema, a regex, or choices one per line)."""

    kind: str
    text: str
    schema: dict | None = field(default=None, compare=False, hash=False)  # the parsed schema (json)
    choices: tuple[str, ...] = ()  # (choices)

    @property
    def label(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def noun(self) -> str:
        return KIND_NOUNS[self.kind]


def parse(kind: str, text: str) -> ConstraintSpec:
    """Check a constraint as typed; ConstraintError says what is wrong with it."""
    if kind not in KINDS:
        raise ConstraintError(f"{kind!r} is not a kind of constraint; use one of {', '.join(KINDS)}.")
    if not isinstance(text, str) or not text.strip():
        what = {"json": "a JSON schema", "regex": "a regex", "choices": "the choices, one per line"}[kind]
        raise ConstraintError(f"The constraint is empty: type {what}.")
    if kind == "json":
        limits.SCHEMA_CHARS.check(len(text), "The schema")
        from playground.uploads import json_depth

        limits.JSON_DEPTH.check(json_depth(text), "The schema")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConstraintError(f"The schema is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
        if not isinstance(schema, dict):
            raise ConstraintError(f"A JSON schema is an object ({{...}}); this is a {type(schema).__name__}.")
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
            raise ConstraintError(f"The schema is not a valid JSON schema at {where}: {exc.message}") from None
        return ConstraintSpec(kind, text, schema=schema)
    if kind == "regex":
        limits.REGEX_CHARS.check(len(text), "The regex")
        return ConstraintSpec(kind, text)
    # a choice is written as typed, a leading space included (" fox" continues after a word); blank lines are skipped
    choices = tuple(dict.fromkeys(c.rstrip("\r") for c in text.split("\n") if c.strip()))
    limits.CONSTRAINT_CHOICES.check(len(choices), "The list")
    for c in choices:
        limits.CHOICE_CHARS.check(len(c), f"The choice {c[:20]!r}")
    return ConstraintSpec(kind, text, choices=choices)


# --- one grammar for one tokenizer -----------------------------------------------------------

_TOKENIZERS: dict[tuple, object] = {}
_TOKENIZERS_LOCK = threading.Lock()


def ll_tokenizer(tokenizer, eos_ids: Sequence[int]):
    """llguidance's view of a transformers tokenizer (about 0.3 s for SmolLM2, 4 s for Gemma's
    262k vocabulary), made once per tokenizer and end-of-text ids and shared: it is immutable."""
    import llguidance.hf

    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), tuple(sorted(int(i) for i in eos_ids)))
    with _TOKENIZERS_LOCK:
        if key not in _TOKENIZERS:
            try:
                _TOKENIZERS[key] = llguidance.hf.from_tokenizer(tokenizer, eos_token=sorted(int(i) for i in eos_ids))
            except ValueError as exc:
                raise ConstraintError(f"This tokenizer cannot be constrained: {exc}.") from None
        return _TOKENIZERS[key]


def _rx_literal(s: str) -> str:
    """A literal as a regex (Rust syntax): letters and digits as they are, every other character as \\x{..}."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):X}}}" for c in s)


def _first_line(msg: str) -> str:
    lines = [ln.rstrip() for ln in str(msg).splitlines() if ln.strip()]
    # llguidance's regex errors come as 'regex parse error:' then the pattern and a caret line; keep them
    text = " ".join(ln.strip() for ln in lines[:4] if not ln.strip().startswith(("1 |", "^")))
    return text[:400]


@dataclass(frozen=True)
class Grammar:
    """A constraint compiled for one tokenizer: llguidance's grammar text and its tokenizer."""

    spec: ConstraintSpec
    grammar: str
    lltok: object
    eos_ids: frozenset[int]
    budget: int  # tokens an answer may take, its end-of-text token included
    priority: tuple[int, ...]  # single-byte token ids the witness walk tries, in order

    @property
    def vocab_size(self) -> int:
        return int(self.lltok.vocab_size)

    def matcher(self):
        import llguidance

        return llguidance.LLMatcher(self.lltok, self.grammar, log_level=0,
                                    limits=llguidance.LLParserLimits(verbose_errors=False))


def grammar_text(spec: ConstraintSpec, budget: int) -> str:
    """The llguidance grammar of a constraint; regexes and choices bounded to budget - 1 characters."""
    import llguidance

    if spec.kind == "json":
        return llguidance.LLMatcher.grammar_from_json_schema(
            spec.schema, defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"})
    if spec.kind == "regex":
        body = spec.text
        if body.startswith("^"):  # the whole answer is matched anyway
            body = body[1:]
        if body.endswith("$") and not body.endswith("\\$"):
            body = body[:-1]
        body = llguidance.regex_to_lark(body, "")
    else:
        body = "(" + "|".join(_rx_literal(c) for c in spec.choices) + ")"
    return llguidance.LLMatcher.grammar_from_lark(
        f"start: ANSWER\nANSWER: /{body}/ & /(?s:.{{0,{max(budget - 1, 0)}}})/\n")


def compile_for(spec: ConstraintSpec, tokenizer, eos_ids: Sequence[int], budget: int) -> Grammar:
    """The constraint for this tokenizer, refused with the reason when it is invalid or unsatisfiable."""
    limits.CONSTRAINT_TOKENS.check(budget, "The token budget", "Ask for fewer tokens.")
    if budget < 2:
        raise ConstraintError(f"A constrained answer needs at least 2 tokens (one and the end); {budget} asked for.")
    if not eos_ids:
        raise ConstraintError("This model declares no end-of-text token, so a constrained answer could not end.")
    lltok = ll_tokenizer(tokenizer, eos_ids)
    try:
        text = grammar_text(spec, budget)
    except ValueError as exc:
        raise ConstraintError(f"The {spec.noun} cannot be compiled: {_first_line(exc)}") from None
    priority = []
    for b in _PRIORITY:
        ids = lltok.tokenize_bytes(bytes([b]))
        if len(ids) == 1:
            priority.append(int(ids[0]))
    g = Grammar(spec, text, lltok, frozenset(int(i) for i in eos_ids), int(budget), tuple(dict.fromkeys(priority)))
    m = g.matcher()
    if m.is_error():
        raise ConstraintError(f"The {spec.noun} is not usable: {_first_line(m.get_error())}")
    Guide(g)  # satisfiable, and finishable within the budget: refused now, with the reason, if not
    return g


# --- following one answer -------------------------------------------------------------------

def _witness(m, limit: int, priority: Sequence[int]) -> list[int] | None:
    """Tokens (at most `limit`, the end token not counted) that bring matcher `m` to an accepting
    state, or None. Works on a copy; prefers the grammar's forced tokens, then closing bytes."""
    m = m.deep_copy()
    out: list[int] = []
    while not m.is_accepting():
        if m.is_error() or len(out) >= limit:
            return None
        ff = m.compute_ff_tokens()
        if ff:
            if len(out) + len(ff) > limit or not m.consume_tokens(ff):
                return None
            out.extend(ff)
            continue
        for t in priority:
            if m.validate_tokens([t]) == 1:
                m.consume_token(t)
                out.append(t)
                break
        else:
            return None
    return out


class Guide:
    """The constraint following one answer, token by token. Not thread-safe: one per answer."""

    def __init__(self, grammar: Grammar, prefix: Sequence[int] = ()) -> None:
        self.grammar = grammar
        self.m = grammar.matcher()
        self.n = 0  # tokens taken
        first = [i for i in self.allowed_ids() if i not in grammar.eos_ids]
        if self.m.is_error() or not first and not self.m.is_accepting():
            raise ConstraintError(f"No text satisfies this {grammar.spec.noun}: not even its first token "
                                  "can be written. Check it for contradictions.")
        w = _witness(self.m, grammar.budget - 1, grammar.priority)
        if w is None:
            raise ConstraintError(f"This {grammar.spec.noun} cannot be completed within {grammar.budget} tokens "
                                  "(the shortest answer found is longer): allow more tokens, or loosen it.")
        self.witness = w
        for i, t in enumerate(prefix):
            try:
                self.advance(int(t))
            except ConstraintError:
                raise ConstraintError(f"Token {i + 1} of the text so far breaks the constraint.") from None

    # the mask ------------------------------------------------------------------------------
    def allowed_np(self) -> np.ndarray:
        """(V_tokenizer,) bool: the tokens the grammar allows next."""
        bits = np.frombuffer(self.m.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self.grammar.vocab_size].astype(bool)

    def allowed(self, vocab: int | None = None) -> torch.Tensor:
        """(V,) bool for logits of `vocab` entries (a model's logits may be padded past the tokenizer)."""
        a = torch.from_numpy(self.allowed_np())
        if vocab is None or vocab == a.shape[0]:
            return a
        if vocab > a.shape[0]:
            return torch.cat([a, torch.zeros(vocab - a.shape[0], dtype=torch.bool)])
        return a[:vocab]

    def allowed_ids(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.allowed_np())]

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., V) -> (..., V): forbidden tokens at -inf (a new tensor)."""
        return logits.masked_fill(~self.allowed(int(logits.shape[-1])), -math.inf)

    # taking tokens ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The answer is complete and nothing can follow but the end."""
        return self.m.is_stopped() or self.m.is_accepting() and not any(
            i not in self.grammar.eos_ids for i in self.allowed_ids())

    @property
    def accepting(self) -> bool:
        return bool(self.m.is_accepting())

    @property
    def remaining(self) -> int:
        return self.grammar.budget - self.n

    def fits(self, token_id: int) -> list[int] | None:
        """The witness after `token_id` if taking it still lets the answer finish in the budget, else None."""
        t = int(token_id)
        if t in self.grammar.eos_ids:
            return [] if self.m.is_accepting() else None
        if self.witness and t == self.witness[0]:
            return self.witness[1:]
        m2 = self.m.deep_copy()
        if not m2.consume_token(t):
            return None
        return _witness(m2, self.remaining - 2, self.grammar.priority)

    def advance(self, token_id: int, witness: list[int] | None = None) -> None:
        t = int(token_id)
        if witness is None:
            witness = self.fits(t)
        if t in self.grammar.eos_ids:
            if not self.m.is_accepting():
                raise ConstraintError("The answer is not complete yet: the end of text is forbidden here.")
        elif not self.m.consume_token(t):
            raise ConstraintError(f"Token {t} is forbidden by the constraint here.")
        self.n += 1
        self.witness = witness if witness is not None else (_witness(self.m, max(self.remaining - 1, 0),
                                                                        self.grammar.priority) or [])

    def choose(self, logits: torch.Tensor, generator: torch.Generator | None, sampling) -> int:
        """One token from (V,) logits under the constraint and `sampling` (greedy when generator is None),
        checked against the budget; the token is taken (advance). The mask comes first, then
        temperature, top-k and top-p over the allowed tokens only."""
        from playground.sampling import probs

        allowed = self.allowed(int(logits.shape[-1]))  # (V,) bool
        if bool(allowed.any()):
            masked = logits.float().reshape(-1).masked_fill(~allowed, -math.inf)  # (V,)
            p = None if generator is None else probs(masked[None], sampling)[0]  # (V,)
            for _ in range(MAX_TRIES):
                if generator is None:
                    t = int(torch.argmax(masked))
                else:
                    t = int(torch.multinomial(p, 1, generator=generator)[0])
                w = self.fits(t)
                if w is not None:
                    self.advance(t, w)
                    return t
                if generator is None:
                    masked[t] = -math.inf
                else:
                    p[t] = 0.0
                    if not bool(p.any()):
                        break
        t = self.witness[0] if self.witness else min(self.grammar.eos_ids)  # what is left of the witness
        self.advance(t, self.witness[1:] if self.witness else [])
        return t


class LogitsProcessor:
    """For `model.generate`: at each step, take the token generate chose last, pick the next one
    under the constraint (and the stream's own seeded generator when it samples), and leave all
    the mass on it, so that generate's greedy step takes exactly that token. One per stream."""

    def __init__(self, grammar: Grammar, prompt_len: int, sampling, seed: int | None) -> None:
        self.guide = Guide(grammar)
        self.prompt_len = int(prompt_len)
        self.sampling = sampling
        self.generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        self.chosen: list[int] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = self.guide.choose(scores[0], self.generator, self.sampling)  # scores: (1, V)
        self.chosen.append(t)
        out = torch.full_like(scores, -math.inf)
        out[0, t] = 0.0
        return out


# --- the Next token page: one distribution, one walk ------------------------------------------

def constrained_view(dist, settings, tokenizer, n: int, guide: Guide):
    """`stepping.view` with the constraint applied first: forbidden tokens are dropped (before
    temperature and the filters), and the view says which of the shown rows they are and how much
    of the model's probability they held. Below the top `n`, the most likely allowed tokens are
    added when they are not among them (often they are far down). A `ConstrainedView`."""
    from playground import stepping as stp
    from playground.sampling import apply_temperature, shape

    base = stp.view(dist, settings, tokenizer, n)
    logits = dist.logits.float().reshape(-1)  # (V,)
    allowed = guide.allowed(int(logits.shape[0]))  # (V,) bool
    sh = shape(logits.masked_fill(~allowed, -math.inf), settings)
    scaled = torch.softmax(apply_temperature(logits, settings.temperature), dim=-1).double()  # (V,), unmasked
    model = torch.softmax(logits.double(), dim=-1)  # (V,)
    rows = [stp.TokenRow(r.id, r.text, r.rank, r.logit, r.p_model, r.p_before, float(sh.final[r.id]),
                         bool(sh.kept[r.id])) for r in base.rows]
    # the most likely allowed tokens too, when the top ones are all forbidden (ranked in the whole vocabulary)
    shown = {r.id for r in rows}
    allowed_ids = torch.nonzero(allowed).flatten()
    best = allowed_ids[torch.argsort(logits[allowed_ids], descending=True)[:ALLOWED_SHOWN]].tolist()
    for i in (i for i in best if i not in shown):
        rows.append(stp.TokenRow(int(i), stp.token_text(tokenizer, i), stp.rank_of(logits, i), float(logits[i]),
                                 float(model[i]), float(scaled[i] / scaled.sum()), float(sh.final[i]), bool(sh.kept[i])))
    rows = tuple(rows)
    return ConstrainedView(
        model_id=base.model_id, prefix_len=base.prefix_len, settings=settings, rows=rows, vocab_size=base.vocab_size,
        n_kept=sh.n_kept, kept_mass=float(scaled[sh.kept].sum() / scaled.sum()), entropy_bits=sh.entropy_bits,
        model_entropy_bits=base.model_entropy_bits, top_probability=sh.top_probability,
        forbidden=frozenset(r.id for r in base.rows if not bool(allowed[r.id])),
        removed_mass=float(model[~allowed].sum()), n_allowed=int(allowed.sum()), complete=guide.accepting,
    )


def constrained_take(walk, dist, tokenizer, how: str, settings, guide: Guide, token_id: int | None = None):
    """`stepping.take` under the constraint: a sampled or greedy step is `Guide.choose`'s (the allowed
    tokens only, seeded per step as the unconstrained walk; near the end of the budget the answer is
    closed), a picked token must be allowed. The step's `p_drawn` is its probability under the
    constraint and the settings."""
    from dataclasses import replace

    from playground import stepping as stp
    from playground.sampling import filtered_logits

    allowed = guide.allowed(int(dist.logits.shape[-1]))  # (V,) bool
    masked = dist.logits.float().masked_fill(~allowed, -math.inf)  # (V,)
    if how == "picked":
        if token_id is None or not (0 <= int(token_id) < allowed.shape[0]) or not bool(allowed[int(token_id)]):
            text = stp.token_text(tokenizer, int(token_id)) if token_id is not None else "?"
            raise ConstraintError(f"{text!r} is forbidden by the constraint here: pick a token that is not greyed "
                                  "and hatched.")
        tid = int(token_id)
    elif how in ("greedy", "sampled"):  # Guide.choose, as a stream chooses (the budget may close the answer)
        g = None if how == "greedy" or settings.greedy else torch.Generator().manual_seed(
            stp.step_seed(settings.seed, len(walk.steps)))
        tid = Guide(guide.grammar, walk.token_ids).choose(dist.logits, g, settings)
    else:
        raise ConstraintError(f"{how!r} is not a way to choose a token; use one of {', '.join(stp.HOWS)}.")
    out = stp.take(walk, dist, tokenizer, "picked", settings, tid)
    p_drawn = float(torch.softmax(filtered_logits(masked, settings), dim=-1)[tid])
    return replace(out, steps=out.steps[:-1] + (replace(out.steps[-1], how=how, p_drawn=p_drawn),))


@dataclass(frozen=True)
class ConstrainedView(NextTokenView):
    """A NextTokenView under a constraint."""

    forbidden: frozenset[int] = frozenset()  # ids of the shown rows the constraint forbids
    removed_mass: float = 0.0  # the model's probability (T = 1) on every forbidden token
    n_allowed: int = 0  # tokens the constraint allows
    complete: bool = False  # the text so far is a whole answer (the end of text is allowed)


# --- checking an answer ----------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """Whether an answer parses (JSON) and satisfies its constraint; `detail` says why not."""

    parses: bool
    valid: bool
    detail: str = ""
    value: object = None  # the parsed JSON


def check_answer(spec: ConstraintSpec, text: str) -> Verdict:
    """Checked independently of the mask: `json` + `jsonschema` for a schema, RE2's full match for a
    regex (its syntax is the Rust regex crate's, nearly), membership for choices."""
    if spec.kind == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return Verdict(False, False, f"does not parse: {exc.msg} at character {exc.pos}")
        import jsonschema

        err = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(spec.schema)(spec.schema)
                                               .iter_errors(value))
        return Verdict(True, err is None, "" if err is None else f"does not validate: {err.message}", value)
    if spec.kind == "regex":
        import re2

        try:
            ok = re2.fullmatch(spec.text, text) is not None
        except re2.error:
            return Verdict(True, False, "RE2 cannot read this regex to check it")
        return Verdict(True, ok, "" if ok else "does not match the regex")
    ok = text in spec.choices
    return Verdict(True, ok, "" if ok else "is not one of the choices")


# --- the bundled tool-call example ------------------------------------------------------------

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city's name", "maxLength": 40},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}


def tool_call_schema(tool: dict = WEATHER_TOOL) -> dict:
    """The JSON a model must write to call `tool`: {"name": <its name>, "arguments": {...}}."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool["name"]}, "arguments": tool["parameters"]},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_call_prompt(question: str, tool: dict = WEATHER_TOOL) -> str:
    """A user turn that describes the function and asks the question (small models have no tool format)."""
    return (f"You can call this function:\n{json.dumps(tool, indent=1)}\n\n"
            f"Answer with the function call as JSON.\nQuestion: {question}")

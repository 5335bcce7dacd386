"""Answers as tokens: each generated token with its probability, its top alternatives, how unsure
the model was there, and the Next token page's link to exactly the prefix it was chosen after.

- `tokens(logprobs)` turns what an engine kept while generating (`playground.engines.TokenLogprob`,
  one per token) into `AnswerToken`s: probability, rank among the alternatives, and the entropy of
  the listed alternatives with the rest of the mass as one outcome. That entropy is a lower bound of
  the step's entropy (merging outcomes never raises it); with the top 20 listed it is close
  whenever the model was fairly sure, and it is the same number on every engine, a server included.
- `origin(lm, text, ...)` says how the Next token page reopens an answer's prefixes: the text for
  its prompt box, its chat toggle, the model and the settings. It is checked at generation time:
  the page must rebuild exactly the prompt ids the answer followed, or there is no link (a system
  message the page cannot carry as its own prompt, a prompt too long for a link, special tokens sent
  as plain text, a server that gives no distribution).
- `href(origin, token_ids, i)` is the link of token i: the page opens with the first i tokens
  walked (replayed as they are, not drawn again), so it shows the distribution token i was drawn from.

The probability is the model's own (temperature 1, no top-k / top-p): what the engines record
(playground.generate, the llama.cpp engine) and what the Next token page calls "model probability"
for that prefix. A sampled token's chance under the settings is on that page, one click away.

What it leaves out: generating (playground.generate and the engines) and rendering
(components/answer_tokens.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from playground.engines import TokenLogprob
from playground.links import LINK_TEXT_MAX

PAGE = "next_token"  # the Next token page's URL path (views/next_token.py)
MAX_WALK = 256  # steps the Next token page replays from a link (views/next_token.py, MAX_REPLAY)


@dataclass(frozen=True)
class AnswerToken:
    """One generated token, as the answer view shows it."""

    index: int  # 0 = the first generated token
    token_id: int | None
    text: str
    probability: float  # the model's own (T = 1, no filter)
    alternatives: tuple[tuple[str, float], ...]  # (text, probability), most likely first, itself included
    rank: int | None  # 1 = the model's most likely token; None when not among the listed alternatives
    entropy_bits: float  # of the listed alternatives with the rest as one outcome (a lower bound)

    @property
    def surprisal_bits(self) -> float:
        return -math.log2(self.probability) if self.probability > 0 else math.inf


def entropy_bits(probabilities: Sequence[float]) -> float:
    """Entropy in bits of the listed probabilities and the rest (1 - their sum) as one more outcome.

    >>> round(entropy_bits([0.5, 0.5]), 6)
    1.0
    >>> round(entropy_bits([0.5, 0.25]), 6)  # the missing 0.25 counts as one outcome
    1.5
    """
    ps = [p for p in probabilities if p > 0]
    rest = max(0.0, 1.0 - sum(ps))
    if rest > 1e-9:
        ps.append(rest)
    return float(-sum(p * math.log2(p) for p in ps))


def tokens(logprobs: Sequence[TokenLogprob]) -> tuple[AnswerToken, ...]:
    """The answer view of what an engine kept for each generated token."""
    out = []
    for i, lp in enumerate(logprobs):
        alts = tuple((a.text, math.exp(a.logprob)) for a in lp.alternatives)
        rank = None
        for r, a in enumerate(lp.alternatives, start=1):
            if (a.token_id is not None and a.token_id == lp.token_id) or (a.token_id is None and a.text == lp.text):
                rank = r
                break
        out.append(AnswerToken(i, lp.token_id, lp.text, math.exp(lp.logprob), alts, rank,
                               entropy_bits([p for _, p in alts]) if alts else float("nan")))
    return tuple(out)


# --- the link to the Next token page -------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """What the Next token page needs to reopen an answer at any of its prefixes."""

    model_id: str
    prompt: str  # the text for the page's prompt box
    chat: bool  # the page's chat-template toggle
    temperature: float
    top_k: int
    top_p: float
    seed: int


def prompt_ids(stream) -> tuple[int, ...] | None:
    """The prompt ids a stream sent (a transformers or llama.cpp stream; None for a server)."""
    ids = getattr(stream, "input_ids", None)
    if ids is not None:
        return tuple(int(i) for i in ids.reshape(-1).tolist())
    ids = getattr(stream, "prompt_ids", None)
    return tuple(int(i) for i in ids) if ids is not None else None


def origin(lm, text: str, settings, use_chat_template: bool, formatted: str, ids: Sequence[int] | None) -> Origin | None:
    """How the Next token page rebuilds exactly the prompt `ids` an answer followed, or None when it cannot.

    `text` is what the person typed, `formatted` the exact string the model received (through
    the chat template, with a system message if there was one). The page formats its prompt box
    itself: first `text` with its chat toggle, then `formatted` with the toggle off; the first
    whose ids are `ids` is the one the link carries.
    """
    from playground.stepping import make_prompt  # stepping imports generate, which needs nothing from here

    caps = getattr(lm, "capabilities", None)
    if ids is None or caps is None or not caps.distribution or getattr(lm, "tokenizer", None) is None:
        return None
    ids = tuple(int(i) for i in ids)
    for prompt, chat in ((text, bool(use_chat_template)), (formatted, False)):
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > LINK_TEXT_MAX:
            continue
        try:
            if make_prompt(lm.tokenizer, prompt, chat).ids == ids:
                return Origin(lm.spec.id, prompt, chat, float(settings.temperature), int(settings.top_k),
                              float(settings.top_p), int(settings.seed))
        except Exception:  # noqa: BLE001 - a template that fails on this text: try the next way, else no link
            continue
    return None


def origin_of(lm, text: str, settings, use_chat_template: bool, result, plain: bool = False) -> Origin | None:
    """`origin` from a finished GenerationResult: its prompt ids are re-encoded from `result.prompt` as
    playground.generate encodes it (so never with `plain`: special tokens sent as text have no link)."""
    tok = getattr(lm, "tokenizer", None)
    if plain or tok is None or not result.prompt:
        return None
    from playground.generate import encode_prompt, templated

    ids = encode_prompt(tok, result.prompt, templated(tok, use_chat_template))[0].tolist()
    return origin(lm, text, settings, use_chat_template, result.prompt, ids)


def query(origin: Origin, token_ids: Sequence[int], index: int) -> dict[str, str] | None:
    """The Next token page's query parameters for the prefix before token `index` (None past MAX_WALK, or
    when the walk is longer than a link's text carries: 256 tokens of a 262k vocabulary can be)."""
    if not 0 <= index <= min(len(token_ids), MAX_WALK):
        return None
    how = "g" if origin.temperature == 0 else "s"  # as playground.stepping.parse_walk reads it
    walk = ".".join(f"{int(t)}{how}" for t in token_ids[:index])
    if len(walk) > LINK_TEXT_MAX:  # the page would read only the first LINK_TEXT_MAX characters of it
        return None
    return {
        "prompt": origin.prompt, "chat": "true" if origin.chat else "false", "model_a": origin.model_id,
        "walk": walk,
        "temperature": f"{origin.temperature:g}", "top_k": str(origin.top_k), "top_p": f"{origin.top_p:g}",
        "seed": str(origin.seed),
    }


def href(origin: Origin | None, token_ids: Sequence[int], index: int) -> str | None:
    """A relative link to the Next token page at the prefix before token `index`, or None."""
    q = query(origin, token_ids, index) if origin is not None else None
    return None if q is None else f"{PAGE}?{urlencode(q)}"

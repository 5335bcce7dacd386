"""The next-token page's logic: the shaped view of one distribution, the walk, the sweep.

- `view(dist, settings, tokenizer, n)` turns the cached logits of one prefix into a
  `NextTokenView`: the top-n tokens with their probability before and after the filters,
  and the numbers beside the chart (entropy, top probability, tokens kept, mass kept).
- `Walk` is a generation taken one token at a time: each `Step` records the token, the
  probability the model gave it, its rank, and how it was chosen (sampled, greedy or
  picked). `take` appends one, `undo` and `reset` go back. A walk step needs one forward
  pass on the new prefix; `LogitsCache` keeps the logits of every prefix seen, so undo and
  every slider re-render without running the model.
- `sweep(lm, ids, settings, temperatures, ...)` draws N samples of a few dozen tokens at
  each of several temperatures (batched, with a KV cache: one model call per new token for
  the whole batch) and reports each temperature's mean log-probability and distinct-n.

The forward passes of a walk go through `playground.passes.next_token_distribution`, and
those of the sweep are counted in the same `passes.FORWARD_PASSES`, so a test can check
that a slider moves without a model call.

What it leaves out: the sampling math (playground.sampling), rendering (components), and
streaming generation (playground.generate).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from playground import jobs, passes
from playground.errors import ContextLengthError, InputError, PlaygroundError
from playground.generate import encode_prompt, format_prompt, templated
from playground.passes import NextTokenDistribution
from playground.loading import LoadedModel
from playground.options import bounds, option, validate
from playground.sampling import SamplingSettings, Shaped, check, filtered_logits, shape

How = Literal["sampled", "greedy", "picked"]
HOWS: tuple[str, ...] = ("sampled", "greedy", "picked")
_HOW_CODE = {"sampled": "s", "greedy": "g", "picked": "p"}
_CODE_HOW = {v: k for k, v in _HOW_CODE.items()}


# --- the prompt ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prompt:
    """What one model receives for a text: the formatted string and its token ids."""

    text: str  # what the user typed
    formatted: str  # through the chat template when asked and the model has one
    templated: bool  # the chat template was applied
    ids: tuple[int, ...]


def has_chat_template(tokenizer) -> bool:
    return templated(tokenizer)


def make_prompt(tokenizer, text: str, use_chat_template: bool, continuation: str = "", plain: bool = False) -> Prompt:
    """The ids a model sees for `text` (+ a continuation typed after the template's assistant header).

    `plain`: special tokens typed in `text` are read as ordinary text (playground.special); the
    continuation is then tokenized on its own after the prompt.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("The prompt is empty: type something for the model to continue.")
    formatted = format_prompt(tokenizer, text, use_chat_template)
    is_templated = templated(tokenizer, use_chat_template)
    if plain:
        from playground import special

        more = tokenizer(continuation, add_special_tokens=False).input_ids if continuation else []
        ids = torch.tensor(special.encode(tokenizer, text, use_chat_template, plain=True)[0].tolist() + list(more))
    else:
        ids = encode_prompt(tokenizer, formatted + continuation, is_templated)[0]  # (T,)
    return Prompt(text, formatted + continuation, is_templated, tuple(int(i) for i in ids))


def token_text(tokenizer, token_id: int) -> str:
    """A token as text; its raw piece when it is part of a multi-byte character."""
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" in text:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
        return piece if isinstance(piece, str) else text
    return text


def eos_ids(lm: LoadedModel) -> frozenset[int]:
    """The ids that end generation: the generation config's and the tokenizer's (another engine's own set)."""
    if not isinstance(lm, LoadedModel):
        return frozenset(getattr(lm, "eos_ids", ()))
    ids: set[int] = set()
    for src in (getattr(lm.model.generation_config, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    return frozenset(ids)


# --- cached logits ------------------------------------------------------------------------

class LogitsCache:
    """The last `max_entries` next-token distributions, keyed by (model id, prefix ids).

    One per browser session (it lives in the session state, never shared). A miss runs one
    forward pass through `passes.next_token_distribution`; a hit runs nothing.
    """

    def __init__(self, max_entries: int = 32, admit: Callable[[int], None] | None = None) -> None:
        self.max_entries = max_entries
        self._d: OrderedDict[tuple[str, tuple[int, ...]], NextTokenDistribution] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.admit = admit  # called with the size the cache would grow to; raising keeps the new entry out

    @property
    def nbytes(self) -> int:
        """Bytes of the logits held."""
        return sum(d.logits.numel() * d.logits.element_size() for d in self._d.values())

    def __contains__(self, key: tuple[str, tuple[int, ...]]) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def get(self, lm: LoadedModel, ids: Sequence[int]) -> NextTokenDistribution:
        key = (lm.spec.id, tuple(int(i) for i in ids))
        if key in self._d:
            self.hits += 1
            self._d.move_to_end(key)
            return self._d[key]
        self.misses += 1
        dist = passes.next_token_distribution(lm, list(key[1]))
        self._d[key] = dist
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)
        if self.admit is not None:
            try:  # the server's memory budget (playground.budget) may say no: then it is not kept
                self.admit(self.nbytes)
            except PlaygroundError:
                del self._d[key]
        return dist


# --- one distribution, shaped for display --------------------------------------------------

@dataclass(frozen=True)
class TokenRow:
    """One candidate next token."""

    id: int
    text: str
    rank: int  # 1 = the most likely (by logit; temperature does not change the order)
    logit: float
    p_model: float  # softmax(logits): the model's own probability
    p_before: float  # after temperature, before the filters
    p_after: float  # after the filters, renormalised; 0 when dropped
    kept: bool


@dataclass(frozen=True)
class NextTokenView:
    """The top tokens of one distribution under one setting, and the numbers beside the chart."""

    model_id: str
    prefix_len: int
    settings: SamplingSettings
    rows: tuple[TokenRow, ...]
    vocab_size: int
    n_kept: int  # tokens that survive the filters
    kept_mass: float  # the mass they held after temperature, before renormalising
    entropy_bits: float  # of the distribution a token is drawn from
    model_entropy_bits: float  # of the model's own distribution (T = 1, no filter)
    top_probability: float  # of the most likely token, after the filters

    @property
    def p_sum(self) -> float:
        """Sum of the shown rows' final probabilities (1 when every survivor is shown)."""
        return sum(r.p_after for r in self.rows)


@dataclass(frozen=True)
class DisplaySettings:
    """How much of the distribution the page shows."""

    top_n: int = option(15, 5, 40, "how many of the most likely tokens the chart shows", 1)


def rank_of(logits: torch.Tensor, token_id: int) -> int:
    """1 + how many tokens have a strictly larger logit. (V,)"""
    return int((logits > logits[int(token_id)]).sum()) + 1


def view(dist: NextTokenDistribution, settings: SamplingSettings, tokenizer, n: int = 20) -> NextTokenView:
    """The top-n tokens (by logit) of `dist` with every stage of their probability."""
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n is {n!r}; show at least 1 token.")
    sh: Shaped = shape(dist.logits, settings)
    n = min(n, dist.vocab_size)
    top = torch.topk(dist.logits, n)  # values, indices: (n,)
    rows = []
    for rank, (logit, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        rows.append(TokenRow(
            id=int(idx), text=token_text(tokenizer, idx), rank=rank, logit=float(logit),
            p_model=float(sh.model[idx]), p_before=float(sh.scaled[idx]), p_after=float(sh.final[idx]),
            kept=bool(sh.kept[idx]),
        ))
    return NextTokenView(
        model_id=dist.model_id, prefix_len=len(dist.input_ids), settings=settings, rows=tuple(rows),
        vocab_size=dist.vocab_size, n_kept=sh.n_kept, kept_mass=sh.kept_mass, entropy_bits=sh.entropy_bits,
        model_entropy_bits=sh.model_entropy_bits, top_probability=sh.top_probability,
    )


def parse_temperatures(text: str, max_count: int = 6) -> tuple[float, ...]:
    """"0.2, 0.7, 1, 1.5" -> (0.2, 0.7, 1.0, 1.5), each within SamplingSettings' temperature bounds."""
    b = bounds(SamplingSettings, "temperature")
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise InputError("No temperature given: type a few, separated by commas (e.g. 0.2, 0.7, 1.0, 1.5).")
    out: list[float] = []
    for p in parts:
        try:
            t = float(p)
        except ValueError:
            raise InputError(f"{p.strip()!r} is not a number: type temperatures separated by commas.") from None
        if not math.isfinite(t) or not (b.lo <= t <= b.hi):
            raise InputError(f"temperature {p.strip()} is outside {b.lo:g} to {b.hi:g}.")
        if t not in out:
            out.append(t)
    if len(out) > max_count:
        raise InputError(f"{len(out)} temperatures given; compare at most {max_count} at once.")
    return tuple(out)


# --- the walk ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One token of the walk."""

    token_id: int
    text: str
    how: str  # "sampled" | "greedy" | "picked"
    p_model: float  # the probability the model gave it (T = 1, no filter)
    p_drawn: float  # its probability under the settings it was chosen with (0 if they dropped it)
    rank: int  # 1 = the model's most likely token
    alternatives: tuple[tuple[str, float], ...] = ()  # the model's top STEP_ALTERNATIVES here: (text, probability)


@dataclass(frozen=True)
class Walk:
    """A generation taken one step at a time from a prompt. Immutable: take / undo return a new walk."""

    model_id: str
    prompt_ids: tuple[int, ...]
    steps: tuple[Step, ...] = ()

    @property
    def ids(self) -> tuple[int, ...]:
        """The prefix the next token follows: the prompt and every chosen token."""
        return self.prompt_ids + tuple(s.token_id for s in self.steps)

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(s.token_id for s in self.steps)

    def undo(self) -> Walk:
        return replace(self, steps=self.steps[:-1])

    def reset(self) -> Walk:
        return replace(self, steps=())

    def to_param(self) -> str:
        """A compact text form for the URL: '123g.456s.789p' (token id + how)."""
        return ".".join(f"{s.token_id}{_HOW_CODE[s.how]}" for s in self.steps)


def parse_walk(param: str) -> list[tuple[int, str]]:
    """'123g.456s' -> [(123, 'greedy'), (456, 'sampled')]; raises InputError on anything else."""
    out: list[tuple[int, str]] = []
    for part in (p for p in str(param).split(".") if p):
        code, digits = part[-1:], part[:-1]
        if code not in _CODE_HOW or not digits.isdigit():
            raise InputError(f"{part!r} in the walk is not a step (a token id then g, s or p).")
        out.append((int(digits), _CODE_HOW[code]))
    return out


def step_seed(seed: int, index: int) -> int:
    """The seed of step `index`: the same seed and step always draw the same token."""
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


def choose(dist: NextTokenDistribution, how: str, settings: SamplingSettings, index: int,
           token_id: int | None = None) -> int:
    """The token a step takes: drawn under `settings` (seeded by step), the argmax, or `token_id`."""
    logits = dist.logits  # (V,)
    if how == "greedy":
        return int(torch.argmax(logits))
    if how == "sampled":
        if settings.greedy:
            return int(torch.argmax(logits))
        p = torch.softmax(filtered_logits(logits, settings), dim=-1)  # (V,)
        g = torch.Generator().manual_seed(step_seed(settings.seed, index))
        return int(torch.multinomial(p, 1, generator=g).item())
    if how == "picked":
        if token_id is None or not (0 <= int(token_id) < dist.vocab_size):
            raise InputError(f"token id {token_id} is not in this vocabulary of {dist.vocab_size:,} tokens.")
        return int(token_id)
    raise InputError(f"{how!r} is not a way to choose a token; use one of {', '.join(HOWS)}.")


STEP_ALTERNATIVES = 8  # the model's top tokens a step keeps, to show beside the one chosen


def _alternatives(p: torch.Tensor, tokenizer) -> tuple[tuple[str, float], ...]:
    """The top STEP_ALTERNATIVES of a probability vector (V,) as (text, probability)."""
    top = torch.topk(p, min(STEP_ALTERNATIVES, p.shape[0]))  # values, indices: (k,)
    return tuple((token_text(tokenizer, int(i)), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist()))


def take(walk: Walk, dist: NextTokenDistribution, tokenizer, how: str, settings: SamplingSettings,
         token_id: int | None = None) -> Walk:
    """Append one step chosen from `dist`, the distribution after `walk.ids`."""
    if dist.model_id != walk.model_id or dist.input_ids != walk.ids:
        raise InputError("This distribution is not the one after the walk's text; re-run the model.")
    check(settings, dist.vocab_size)
    tid = choose(dist, how, settings, len(walk.steps), token_id)
    p = torch.softmax(dist.logits, dim=-1)  # (V,)
    p_drawn = float(torch.softmax(filtered_logits(dist.logits, settings), dim=-1)[tid])
    step = Step(tid, token_text(tokenizer, tid), how, float(p[tid]), p_drawn, rank_of(dist.logits, tid),
                _alternatives(p, tokenizer))
    return replace(walk, steps=walk.steps + (step,))


def replay(model_id: str, prompt_ids: Sequence[int], choices: Sequence[tuple[int, str]],
           dist_at: Callable[[tuple[int, ...]], NextTokenDistribution], tokenizer,
           settings: SamplingSettings) -> Walk:
    """Rebuild a walk from its token ids (as in a URL), with one distribution per prefix.

    The ids are taken as they are (a sampled step is not drawn again); p_drawn is under `settings`.
    """
    walk = Walk(model_id, tuple(int(i) for i in prompt_ids))
    for tid, how in choices:
        dist = dist_at(walk.ids)
        if not (0 <= tid < dist.vocab_size):
            raise InputError(f"token id {tid} is not in this vocabulary of {dist.vocab_size:,} tokens.")
        p = torch.softmax(dist.logits, dim=-1)
        p_drawn = float(torch.softmax(filtered_logits(dist.logits, settings), dim=-1)[tid])
        step = Step(tid, token_text(tokenizer, tid), how, float(p[tid]), p_drawn, rank_of(dist.logits, tid),
                    _alternatives(p, tokenizer))
        walk = replace(walk, steps=walk.steps + (step,))
    return walk


def greedy_walk(lm: LoadedModel, prompt_ids: Sequence[int], n: int, cache: LogitsCache | None = None,
                stop_at_eos: bool = True) -> Walk:
    """`n` greedy steps, one forward pass each (what pressing "greedy" n times does)."""
    cache = LogitsCache(max_entries=2) if cache is None else cache  # an empty cache is falsy
    walk = Walk(lm.spec.id, tuple(int(i) for i in prompt_ids))
    eos = eos_ids(lm)
    for _ in range(n):
        walk = take(walk, cache.get(lm, walk.ids), lm.tokenizer, "greedy", SamplingSettings(temperature=0.0))
        if stop_at_eos and walk.steps[-1].token_id in eos:
            break
    return walk


# --- the sampling sweep ------------------------------------------------------------------

@dataclass(frozen=True)
class SweepSettings:
    """How many samples of how many tokens the sweep draws at each temperature."""

    n_samples: int = option(4, 1, 16, "samples drawn at each temperature", 1)
    n_tokens: int = option(24, 4, 64, "tokens in each sample (fewer if the model ends its turn)", 1)


@dataclass(frozen=True)
class Sample:
    token_ids: tuple[int, ...]  # up to and including an end-of-sequence token
    text: str
    logprobs: tuple[float, ...]  # natural log of the model's probability of each token (T = 1)
    ended: bool  # the model produced an end-of-sequence token

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else float("nan")


@dataclass(frozen=True)
class SweepPoint:
    """The samples at one temperature and what they add up to."""

    temperature: float
    samples: tuple[Sample, ...]
    mean_logprob: float  # over every sampled token: how likely the model finds its own text
    distinct_1: float  # distinct unigrams / all unigrams over the samples
    distinct_2: float  # distinct bigrams / all bigrams


@dataclass(frozen=True)
class Sweep:
    model_id: str
    prefix_ids: tuple[int, ...]
    settings: SamplingSettings  # top-k, top-p, min-p and seed; the temperature varies
    sweep_settings: SweepSettings
    points: tuple[SweepPoint, ...]
    seconds: float
    forward_passes: int


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams / all n-grams over `sequences` (Li et al., 2016); 0.0 when there is none."""
    if n < 1:
        raise InputError(f"n is {n}; n-grams need n of 1 or more.")
    grams = [tuple(seq[i:i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sweep(lm: LoadedModel, prefix_ids: Sequence[int], settings: SamplingSettings, temperatures: Sequence[float],
          sweep_settings: SweepSettings | None = None,
          progress: Callable[[float, str], None] | None = None) -> Sweep:
    """N samples at each temperature from `prefix_ids`, all in one batch with a KV cache, as one turn of
    the local work queue (playground.jobs)."""
    with jobs.turn(lm, "a sampling sweep"):
        return _sweep(lm, prefix_ids, settings, temperatures, sweep_settings, progress)


def _sweep(lm: LoadedModel, prefix_ids: Sequence[int], settings: SamplingSettings, temperatures: Sequence[float],
           sweep_settings: SweepSettings | None, progress: Callable[[float, str], None] | None) -> Sweep:
    """N samples at each temperature from `prefix_ids`, all in one batch with a KV cache.

    One prefill pass on the prefix, its cache repeated for every row, then one batched pass
    per new token. Each temperature's rows draw with their own generator (seeded by
    `settings.seed` and the temperature's position), through the same `filtered_logits`
    as the page. Log-probabilities are the model's own (T = 1, no filter).
    """
    ss = validate(sweep_settings or SweepSettings())
    if not temperatures:
        raise InputError("No temperature to sweep: give at least one.")
    for t in temperatures:
        check(replace(settings, temperature=float(t)))
    ids = torch.as_tensor(list(prefix_ids), dtype=torch.long).reshape(1, -1)  # (1, T)
    T0 = ids.shape[1]
    passes.check_length(lm, T0)
    if T0 + ss.n_tokens > lm.context_length:
        raise ContextLengthError(
            f"The prefix is {T0:,} tokens and the sweep adds {ss.n_tokens}; {lm.spec.name}'s context is "
            f"{lm.context_length:,}."
        )
    n, temps = ss.n_samples, [float(t) for t in temperatures]
    B = n * len(temps)
    eos = eos_ids(lm)
    pad = next(iter(sorted(eos)), 0)
    gens = [torch.Generator().manual_seed(step_seed(settings.seed, 1_000 + i)) for i in range(len(temps))]
    start = time.perf_counter()
    n_passes = 0

    def call(**kw):
        nonlocal n_passes
        passes._count()  # the sweep's model calls count with every other forward pass
        n_passes += 1
        with torch.no_grad():
            return lm.model(**kw, use_cache=True)

    out = call(input_ids=ids, attention_mask=torch.ones_like(ids))
    cache = out.past_key_values
    cache.batch_repeat_interleave(B)  # the prefix's keys and values, once per row
    logits = out.logits[:, -1].float().expand(B, -1)  # (B, V)
    chosen = torch.empty(B, 0, dtype=torch.long)  # (B, t)
    logps = torch.empty(B, 0, dtype=torch.float64)  # (B, t)
    done = torch.zeros(B, dtype=torch.bool)  # (B,)
    ended_at = torch.full((B,), ss.n_tokens, dtype=torch.long)  # tokens kept per row
    for step in range(ss.n_tokens):
        nxt = torch.empty(B, dtype=torch.long)  # (B,)
        for i, t in enumerate(temps):
            rows = slice(i * n, (i + 1) * n)
            s = replace(settings, temperature=t)
            if s.greedy:
                nxt[rows] = torch.argmax(logits[rows], dim=-1)
            else:
                p = torch.softmax(filtered_logits(logits[rows], s), dim=-1)  # (n, V)
                nxt[rows] = torch.multinomial(p, 1, generator=gens[i])[:, 0]
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        lp = torch.log_softmax(logits.double(), dim=-1).gather(1, nxt[:, None])[:, 0]  # (B,)
        chosen = torch.cat([chosen, nxt[:, None]], dim=1)
        logps = torch.cat([logps, lp[:, None]], dim=1)
        newly = ~done & torch.tensor([int(x) in eos for x in nxt.tolist()])
        ended_at = torch.where(newly, torch.full_like(ended_at, step + 1), ended_at)
        done |= newly
        if progress:
            progress((step + 1) / ss.n_tokens, f"token {step + 1} of {ss.n_tokens} for {B} samples")
        if step + 1 == ss.n_tokens or bool(done.all()):
            break
        total = T0 + step + 1
        out = call(input_ids=nxt[:, None], attention_mask=torch.ones(B, total, dtype=torch.long),
                   past_key_values=cache)
        cache = out.past_key_values
        logits = out.logits[:, -1].float()  # (B, V)
    points = []
    for i, t in enumerate(temps):
        samples = []
        for r in range(i * n, (i + 1) * n):
            k = int(min(ended_at[r], chosen.shape[1]))
            toks = tuple(int(x) for x in chosen[r, :k])
            samples.append(Sample(
                token_ids=toks, text=lm.tokenizer.decode(list(toks), skip_special_tokens=True),
                logprobs=tuple(float(x) for x in logps[r, :k]), ended=bool(toks and toks[-1] in eos),
            ))
        all_lp = [x for s in samples for x in s.logprobs]
        points.append(SweepPoint(
            temperature=t, samples=tuple(samples),
            mean_logprob=sum(all_lp) / len(all_lp) if all_lp else float("nan"),
            distinct_1=distinct_n([s.token_ids for s in samples], 1),
            distinct_2=distinct_n([s.token_ids for s in samples], 2),
        ))
    return Sweep(lm.spec.id, tuple(int(i) for i in prefix_ids), settings, ss, tuple(points),
                 time.perf_counter() - start, n_passes)

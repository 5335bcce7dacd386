"""Comparing models: one prompt to 2-4 catalogue entries, precision variants, perplexity.

- `SideBySide(lms, text, entries)` streams every model on the same prompt. Each
  `generate.stream` already generates in its own worker thread; here one pump thread per
  model drains its stream into a shared queue, so the caller (one Streamlit script thread)
  gets `Update`s from all models as they come and every column fills at its own pace.
  Exhausted, `.result` is a `Comparison` of `ModelRun`s: the text and the numbers that decide
  which model to use (time to first token, tokens/s, tokens generated as counted by the
  model's own tokenizer, why it stopped, load time, memory).
- `kl_divergence(p, q)` and `divergence(ref, other, text)`: how far a precision variant
  (bf16, dynamic int8) departs from fp32 over a text: mean KL(p_fp32 || p_variant) of the
  next-token distributions, and how often both pick the same top-1 token.
  `variant_report(...)` puts that together with size on disk, memory and speed.
- `perplexity(lm, text)`: exp(mean negative log-likelihood) over a text, with each token's
  surprisal (-ln p, in nats) for colouring and bits per byte (comparable across tokenizers).
- `to_json` / `to_csv`: a Comparison as a file.

Worked example (hand-checked, the one the tests use): p = (1/2, 1/2), q = (1/4, 3/4)
  KL(p || q) = 1/2 ln(0.5/0.25) + 1/2 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3) = 0.14384 nats.

What it leaves out: loading weights (playground.loading, cached by components.cache),
the generation loop itself (playground.generate) and drawing (components.compare).
"""

from __future__ import annotations

import csv
import io
import json
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import torch

from playground import answers
from playground import generate as gen
from playground import jobs
from playground.answers import Origin
from playground.engines import TokenLogprob
from playground.errors import InputError, PlaygroundError, describe
from playground.generate import GenerationResult, GenerationSettings
from playground.passes import forward
from playground.loading import LoadedModel, model_facts

MIN_MODELS, MAX_MODELS = 2, 4
MAX_STOP_SEQUENCES, MAX_STOP_CHARS = 4, 40
Progress = Callable[[float, str], None]

SAMPLES = {
    "Encyclopedia prose": (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
        "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
        "from 1887 to 1889 as the centrepiece of the World's Fair."
    ),
    "Python code": (
        "def fibonacci(n):\n"
        "    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
        "    a, b = 0, 1\n"
        "    for _ in range(n):\n"
        "        a, b = b, a + b\n"
        "    return a\n"
    ),
    "Shuffled words": (
        "Tower the lattice Paris wrought-iron is a Eiffel on France Mars Champ de the in. "
        "Gustave after named engineer the is it company whose designed built tower."
    ),
}


# --- side by side ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One column of a comparison: a catalogue id and the settings it runs with."""

    model_id: str
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    use_chat_template: bool = True  # used only when the model has a chat template
    constraint: object = None  # a playground.constrain.ConstraintSpec every token of the answer must fit


@dataclass(frozen=True)
class RunMetrics:
    """The numbers under one column."""

    prompt_tokens: int
    new_tokens: int  # generated token ids, as the model's own tokenizer counts them
    time_to_first_token: float  # seconds
    tokens_per_second: float  # after the first token
    total_seconds: float
    finish_reason: str  # "end of turn" | "end of sequence" | "max tokens" | "stop sequence" | "cancelled" | "error"
    load_seconds: float  # how long loading the model took (once; later uses come from the cache)
    memory_bytes: int  # the model's weights and buffers in memory


@dataclass(frozen=True)
class ModelRun:
    """One model's answer and its numbers."""

    column: int
    model_id: str
    label: str
    precision: str
    templated: bool  # the prompt went through the model's chat template
    prompt: str  # exactly the string the model received
    settings: GenerationSettings
    text: str
    token_ids: tuple[int, ...]
    metrics: RunMetrics
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # one per generated token, where the engine gives them
    origin: Origin | None = None  # how the Next token page reopens this answer's prefixes (None: it cannot)


@dataclass(frozen=True)
class Update:
    """What changed in one column: new text, or (once) the finished run."""

    column: int
    text: str  # new text since the last update of this column ("" when it finished)
    so_far: str  # all the text of this column so far
    run: ModelRun | None = None  # set on the column's last update
    waiting: int | None = None  # set while the column waits in the local work queue: requests ahead of it


@dataclass(frozen=True)
class Comparison:
    """A finished side-by-side run."""

    text: str  # the user's prompt, before any chat template
    runs: tuple[ModelRun, ...]
    concurrent: bool  # True: all models generated at once (sharing the CPU); False: one after another
    started: str  # ISO 8601, UTC


def parse_stop(text: str) -> tuple[str, ...]:
    """Stop sequences typed as one line, separated by commas; ``\\n`` stands for a newline.

    >>> parse_stop("\\\\n\\\\n, User:")
    ('\\n\\n', 'User:')
    """
    if not text or not text.strip():
        return ()
    out = []
    for part in text.split(","):
        part = part.strip().replace("\\n", "\n").replace("\\t", "\t")
        if not part:
            continue
        if len(part) > MAX_STOP_CHARS:
            raise InputError(f"The stop sequence {part[:20]!r}... is {len(part)} characters; at most {MAX_STOP_CHARS}.")
        out.append(part)
    if len(out) > MAX_STOP_SEQUENCES:
        raise InputError(f"{len(out)} stop sequences given; at most {MAX_STOP_SEQUENCES}.")
    return tuple(dict.fromkeys(out))


def stop_text(stop: Sequence[str]) -> str:
    """The inverse of `parse_stop`, for a text box or a URL."""
    return ", ".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in stop)


def check_entries(model_ids: Sequence[str]) -> None:
    n = len(model_ids)
    if not MIN_MODELS <= n <= MAX_MODELS:
        raise InputError(f"{n} model(s) picked; pick {MIN_MODELS} to {MAX_MODELS} to compare.")


class SideBySide:
    """Stream one prompt through several models; iterate for `Update`s, then read `.result`.

    concurrent=True runs every model at once (what a person watching wants; the models share
    the CPU, so each one's tokens/s is lower than alone). concurrent=False runs them one after
    another, so each speed is measured on an otherwise idle machine.
    Prompts are checked (length against each context) before anything runs.
    """

    def __init__(self, lms: Sequence[LoadedModel], text: str, entries: Sequence[Entry], concurrent: bool = True,
                 plain: bool = False) -> None:
        if len(lms) != len(entries):
            raise InputError(f"{len(lms)} models loaded for {len(entries)} entries.")
        check_entries([e.model_id for e in entries])
        for lm, e in zip(lms, entries):
            if lm.spec.id != e.model_id:
                raise InputError(f"Column {e.model_id!r} was given the model {lm.spec.id!r}.")
        self.lms, self.text, self.entries, self.concurrent = list(lms), text, list(entries), concurrent
        # plain: special tokens typed in the text go as ordinary text (playground.special); a server
        # tokenizes by itself and gets the characters either way
        self.streams = [gen.stream(lm, text, e.settings, use_chat_template=e.use_chat_template,
                                   plain=plain and lm.tokenizer is not None,
                                   **({"constraint": e.constraint} if e.constraint is not None else {}))
                        for lm, e in zip(lms, entries)]
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.result: Comparison | None = None

    def cancel(self) -> None:
        for s in self.streams:
            s.cancel()

    def _run(self, i: int, payload: GenerationResult | BaseException) -> ModelRun:
        lm, e, s = self.lms[i], self.entries[i], self.streams[i]
        if isinstance(payload, GenerationResult):
            r = payload
            metrics = RunMetrics(r.prompt_tokens, r.new_tokens, r.time_to_first_token, r.tokens_per_second,
                                 r.total_seconds, r.finish_reason, lm.load_seconds, lm.memory_bytes)
            return ModelRun(i, lm.spec.id, lm.spec.label, lm.spec.precision, s.templated, s.prompt, e.settings,
                            r.text, r.token_ids, metrics, logprobs=r.logprobs,
                            origin=answers.origin(lm, self.text, e.settings, e.use_chat_template, s.prompt,
                                                  answers.prompt_ids(s)))
        metrics = RunMetrics(s.prompt_tokens, 0, 0.0, 0.0, 0.0, "error", lm.load_seconds, lm.memory_bytes)
        return ModelRun(i, lm.spec.id, lm.spec.label, lm.spec.precision, s.templated, s.prompt, e.settings,
                        "", (), metrics, error=describe(payload))

    @staticmethod
    def _pump(i: int, s: gen.Stream, q: queue.Queue) -> None:
        try:
            for chunk in s:
                q.put(("chunk", i, chunk.text))
            q.put(("done", i, s.result))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            q.put(("done", i, exc))

    def __iter__(self) -> Iterator[Update]:
        n = len(self.streams)
        texts = [""] * n
        runs: list[ModelRun | None] = [None] * n
        try:
            if self.concurrent:
                q: queue.Queue = queue.Queue()
                for i, s in enumerate(self.streams):
                    threading.Thread(target=self._pump, args=(i, s, q), daemon=True, name=f"compare-{i}").start()
                remaining = n
                while remaining:
                    try:
                        kind, i, payload = q.get(timeout=jobs.POLL)
                    except queue.Empty:  # nothing new: say which columns wait in the work queue, and where
                        for i, s in enumerate(self.streams):
                            t = getattr(s, "ticket", None)
                            if runs[i] is None and not texts[i] and t is not None and t.state == "waiting":
                                yield Update(i, "", texts[i], waiting=t.ahead)
                        continue
                    if kind == "chunk":
                        texts[i] += payload
                        yield Update(i, payload, texts[i])
                    else:
                        runs[i] = self._run(i, payload)
                        remaining -= 1
                        yield Update(i, "", texts[i], runs[i])
            else:
                for i, s in enumerate(self.streams):
                    try:
                        for chunk in s:
                            texts[i] += chunk.text
                            yield Update(i, chunk.text, texts[i])
                        payload: GenerationResult | BaseException = s.result  # type: ignore[assignment]
                    except PlaygroundError as exc:
                        payload = exc
                    runs[i] = self._run(i, payload)
                    yield Update(i, "", texts[i], runs[i])
        finally:
            # Stopped early (the page reran, the caller broke out): stop every worker too.
            if any(r is None for r in runs):
                self.cancel()
        self.result = Comparison(self.text, tuple(runs), self.concurrent, self.started)  # type: ignore[arg-type]


def compare(lms: Sequence[LoadedModel], text: str, entries: Sequence[Entry], concurrent: bool = True) -> Comparison:
    """Run a comparison to the end (no streaming)."""
    sbs = SideBySide(lms, text, entries, concurrent)
    for _ in sbs:
        pass
    assert sbs.result is not None
    return sbs.result


# --- export ----------------------------------------------------------------------------

CSV_FIELDS = [
    "column", "model_id", "label", "precision", "templated", "max_new_tokens", "temperature", "top_p", "top_k", "seed",
    "stop", "prompt_tokens", "new_tokens", "time_to_first_token_s", "tokens_per_second", "total_s", "finish_reason",
    "load_s", "memory_bytes", "error", "text",
]


def _row(run: ModelRun) -> dict:
    s, m = run.settings, run.metrics
    return {
        "column": run.column, "model_id": run.model_id, "label": run.label, "precision": run.precision,
        "templated": run.templated, "max_new_tokens": s.max_new_tokens, "temperature": s.temperature,
        "top_p": s.top_p, "top_k": s.top_k, "seed": s.seed, "stop": stop_text(s.stop),
        "prompt_tokens": m.prompt_tokens, "new_tokens": m.new_tokens,
        "time_to_first_token_s": round(m.time_to_first_token, 4), "tokens_per_second": round(m.tokens_per_second, 3),
        "total_s": round(m.total_seconds, 4), "finish_reason": m.finish_reason, "load_s": round(m.load_seconds, 3),
        "memory_bytes": m.memory_bytes, "error": run.error or "", "text": run.text,
    }


def to_json(c: Comparison) -> str:
    """The whole comparison: prompt, each model's exact prompt, settings, text, token ids and numbers."""
    runs = []
    for run in c.runs:
        d = asdict(run)
        d["settings"]["stop"] = list(run.settings.stop)
        d["token_ids"] = list(run.token_ids)
        runs.append(d)
    return json.dumps({"prompt": c.text, "concurrent": c.concurrent, "started": c.started, "runs": runs},
                      ensure_ascii=False, indent=2)


def to_csv(c: Comparison) -> str:
    """One row per model: settings, numbers and the answer."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    w.writeheader()
    for run in c.runs:
        w.writerow(_row(run))
    return out.getvalue()


def rows(c: Comparison) -> list[dict]:
    """The CSV rows as dicts (for a table)."""
    return [_row(r) for r in c.runs]


# --- precision variants ----------------------------------------------------------------


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in nats for each row of two sets of logits (any real scores; softmax is applied).

    (..., V), (..., V) -> (...). Zero where the distributions agree; never negative.
    """
    if p_logits.shape != q_logits.shape:
        raise InputError(f"KL needs logits of one shape; got {tuple(p_logits.shape)} and {tuple(q_logits.shape)}.")
    logp = torch.log_softmax(p_logits.float(), dim=-1)  # (..., V)
    logq = torch.log_softmax(q_logits.float(), dim=-1)  # (..., V)
    # kl_div(input=log q, target=log p) = sum p (log p - log q), with 0 log 0 = 0
    return torch.nn.functional.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


@dataclass(frozen=True)
class Divergence:
    """How a model's next-token distributions depart from a reference's, position by position."""

    reference_id: str
    model_id: str
    token_ids: tuple[int, ...]
    pieces: tuple[str, ...]
    kl: tuple[float, ...]  # (T,) KL(p_reference || p_model) in nats, after each position
    top1_match: tuple[bool, ...]  # (T,) both rank the same token first

    @property
    def kl_mean(self) -> float:
        return sum(self.kl) / len(self.kl)

    @property
    def top1_agreement(self) -> float:
        return sum(self.top1_match) / len(self.top1_match)


def _same_vocabulary(a: LoadedModel, b: LoadedModel) -> None:
    if a.spec.base_id != b.spec.base_id and a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise InputError(
            f"{a.spec.label} and {b.spec.label} have different tokenizers; their next-token distributions "
            "cannot be compared token by token. Compare precisions of one model."
        )


def _divergence(reference: LoadedModel, other: LoadedModel, ids: torch.Tensor, pieces: tuple[str, ...],
                ref_logits: torch.Tensor) -> Divergence:
    if other is reference:
        got = ref_logits
    elif isinstance(other, LoadedModel):
        got = forward(other, ids).logits  # (T, V)
    else:  # another engine (llama.cpp) gives the logits of every position itself
        got = other.position_logits(ids)  # (T, V)
    assert got is not None
    kl = kl_divergence(ref_logits, got)  # (T,)
    match = ref_logits.argmax(-1) == got.argmax(-1)  # (T,)
    return Divergence(reference.spec.id, other.spec.id, tuple(ids.tolist()), pieces,
                      tuple(float(x) for x in kl), tuple(bool(x) for x in match))


def divergence(reference: LoadedModel, other: LoadedModel, text: str, max_tokens: int = 512) -> Divergence:
    """Mean KL and top-1 agreement of `other` against `reference` over `text` (one forward pass each)."""
    _same_vocabulary(reference, other)
    ids, pieces = _encode(reference, text, max_tokens)  # (T,)
    ref = forward(reference, ids).logits  # (T, V)
    assert ref is not None
    return _divergence(reference, other, ids, pieces, ref)


@dataclass(frozen=True)
class VariantRow:
    """One precision of a model: what it costs and how far it departs from fp32."""

    model_id: str
    label: str
    precision: str
    weight_dtype: str  # of the Linear layers: "float32", "bfloat16", "qint8"; a GGUF file's quantization ("Q4_1")
    quantized_linears: int  # Linear layers replaced by dynamic int8 ones
    parameters: int
    disk_bytes: int  # the safetensors it is loaded from (bf16 and int8 are made from the fp32 file at load time)
    memory_bytes: int  # measured on the loaded model
    load_seconds: float
    tokens_per_second: float | None  # greedy, raw prompt, measured one model at a time
    kl_mean: float  # vs fp32, nats; 0 for fp32 itself
    top1_agreement: float  # vs fp32; 1 for fp32 itself
    kl: tuple[float, ...]  # per position


@dataclass(frozen=True)
class VariantReport:
    base_id: str
    text: str
    pieces: tuple[str, ...]
    rows: tuple[VariantRow, ...]

    def row(self, precision: str) -> VariantRow:
        for r in self.rows:
            if r.precision == precision:
                return r
        raise KeyError(precision)


def weight_dtype(lm: LoadedModel) -> tuple[str, int]:
    """The dtype of the model's Linear weights and how many Linear layers are dynamic int8
    (for a GGUF file on llama.cpp, its quantization)."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    if not isinstance(lm, LoadedModel):
        return lm.spec.precision, 0

    quantized = sum(isinstance(m, QLinear) for m in lm.model.modules())
    if quantized:
        return "qint8", quantized
    for m in lm.model.modules():
        if isinstance(m, torch.nn.Linear):
            return str(m.weight.dtype).removeprefix("torch."), 0
    return str(next(lm.model.parameters()).dtype).removeprefix("torch."), 0


def speed(lm: LoadedModel, prompt: str, new_tokens: int = 16) -> float:
    """Greedy tokens/s on a raw prompt (after the first token), through the app's generation path."""
    r = gen.generate(lm, prompt, GenerationSettings(max_new_tokens=new_tokens), use_chat_template=False)
    return r.tokens_per_second


def variant_report(lms: Sequence[LoadedModel], text: str, speed_prompt: str | None = "The history of Paris",
                   speed_tokens: int = 16, progress: Progress | None = None, max_tokens: int = 512) -> VariantReport:
    """Size, memory, speed and divergence from fp32 of each precision in `lms` (one must be fp32)."""
    report = progress or (lambda f, m: None)
    refs = [lm for lm in lms if lm.spec.precision == "fp32"]
    if not refs:
        raise InputError(f"The variants {[lm.spec.id for lm in lms]} include no fp32 model to compare against.")
    ref = refs[0]
    rows_: list[VariantRow] = []
    for lm in lms:
        _same_vocabulary(ref, lm)
    steps = 1 + len(lms) * (2 if speed_prompt else 1)
    report(0.0, f"{ref.spec.label}: the reference next-token distributions over the text")
    ids, pieces = _encode(ref, text, max_tokens)  # (T,)
    ref_logits = forward(ref, ids).logits  # (T, V), computed once for every variant
    assert ref_logits is not None
    done = 1
    for lm in lms:
        report(done / steps, f"{lm.spec.label}: next-token distributions over the text")
        d = _divergence(ref, lm, ids, pieces, ref_logits)
        done += 1
        tps = None
        if speed_prompt:
            report(done / steps, f"{lm.spec.label}: generating {speed_tokens} tokens for its speed")
            tps = speed(lm, speed_prompt, speed_tokens)
            done += 1
        if isinstance(lm, LoadedModel):
            facts = model_facts(lm.spec.id, lm.folder)
            parameters, disk = facts.parameters, facts.disk_bytes
        else:  # a GGUF file on llama.cpp: the parameters are the reference's, the file is what is on disk
            parameters, disk = model_facts(ref.spec.id, ref.folder).parameters, lm.path.stat().st_size
        dtype, quantized = weight_dtype(lm)
        rows_.append(VariantRow(lm.spec.id, lm.spec.label, lm.spec.precision, dtype, quantized, parameters,
                                disk, lm.memory_bytes, lm.load_seconds, tps, d.kl_mean,
                                d.top1_agreement, d.kl))
    report(1.0, "done")
    return VariantReport(ref.spec.base_id, text, pieces, tuple(rows_))


# --- perplexity ------------------------------------------------------------------------


def _pieces(tokenizer, text: str, ids: list[int], offsets: list[tuple[int, int]] | None) -> tuple[str, ...]:
    """The text each token covers; joined they give back `text` (a special token covers "")."""
    if offsets is None:
        return tuple(tokenizer.decode([i]) for i in ids)
    out: list[str] = []
    end = 0
    for _, b in offsets:
        if b <= end:
            out.append("")  # a special token, or the rest of a character split across tokens
            continue
        out.append(text[end:b])
        end = b
    if out and end < len(text):
        out[-1] += text[end:]
    return tuple(out)


def _encode(lm: LoadedModel, text: str, max_tokens: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Token ids (T,) of `text` as the model reads it (with its BOS if it adds one), and their pieces."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("The text is empty: type or pick a text to measure.")
    tok = lm.tokenizer
    try:
        enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):
        enc, offsets = tok(text, add_special_tokens=True), None
    ids = list(enc["input_ids"])
    if len(ids) > max_tokens:
        raise InputError(f"The text is {len(ids):,} tokens for {lm.spec.label}; at most {max_tokens:,} are measured here. Shorten it.")
    return torch.tensor(ids, dtype=torch.long), _pieces(tok, text, ids, offsets)  # (T,)


@dataclass(frozen=True)
class Perplexity:
    """How surprised a model is by a text, overall and token by token."""

    model_id: str
    label: str
    text: str
    token_ids: tuple[int, ...]
    pieces: tuple[str, ...]  # the text each token covers
    surprisal: tuple[float | None, ...]  # -ln p(token | tokens before), nats; None for the first (not predicted)
    nll_mean: float  # mean over predicted tokens, nats
    perplexity: float  # exp(nll_mean)
    bits_per_byte: float  # total surprisal in bits / UTF-8 bytes of the predicted tokens

    @property
    def predicted(self) -> int:
        return sum(s is not None for s in self.surprisal)


def perplexity(lm: LoadedModel, text: str, max_tokens: int = 1024) -> Perplexity:
    """exp(mean negative log-likelihood) of `text` under `lm`, from one forward pass."""
    ids, pieces = _encode(lm, text, max_tokens)  # (T,)
    if ids.shape[0] < 2:
        raise InputError(f"The text is {ids.shape[0]} token for {lm.spec.label}; perplexity needs at least 2.")
    logits = forward(lm, ids).logits  # (T, V)
    assert logits is not None
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)  # (T-1, V): the distribution after each prefix
    nll = -logp.gather(1, ids[1:, None])[:, 0]  # (T-1,): -ln p(token t+1 | tokens <= t)
    mean = float(nll.mean())
    n_bytes = sum(len(p.encode("utf-8")) for p in pieces[1:]) or 1
    return Perplexity(
        model_id=lm.spec.id,
        label=lm.spec.label,
        text=text,
        token_ids=tuple(ids.tolist()),
        pieces=pieces,
        surprisal=(None, *(float(x) for x in nll)),
        nll_mean=mean,
        perplexity=math.exp(mean),
        bits_per_byte=float(nll.sum()) / math.log(2) / n_bytes,
    )

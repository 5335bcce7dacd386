"""Streaming generation: `model.generate` in a worker thread, tokens handed back as they come.

`stream(loaded, prompt, settings)` yields `Chunk`s (new text and token ids) and finishes by
returning a `GenerationResult` with the metrics a comparison needs: time to first token,
tokens per second, why it stopped. Because it is `model.generate` underneath, greedy output
is `model.generate(do_sample=False)` token for token; a sampled stream draws each token from
its own seeded generator, so the same seed gives the same text even with other generations
running at the same time.

    gen = stream(lm, "Tell me a joke", GenerationSettings(max_new_tokens=20))
    for chunk in gen: print(chunk.text, end="")
    result = gen.result

Each generated token keeps its log-probability and top `ALTERNATIVES` (`Chunk.logprobs`,
`GenerationResult.logprobs`): a logits processor placed before any other records the log-softmax
of the raw scores at each step. That is the model's own distribution (T = 1, no top-k / top-p),
the "model probability" the Next token page shows for the same prefix and what the llama.cpp
engine records, whatever settings the token was drawn with.

What it leaves out: the step-by-step distribution view (playground.passes + sampling).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from playground import jobs
from playground.engines import TRANSFORMERS, TokenChoice, TokenLogprob
from playground.errors import ContextLengthError, InputError, PlaygroundError
from playground.loading import LoadedModel
from playground.options import option, shared, validate
from playground.sampling import SamplingSettings, probs


@dataclass(frozen=True)
class GenerationSettings:
    """Settings shared by every generation path; the sliders are built from these bounds."""

    max_new_tokens: int = option(64, 1, 2048, "how many tokens to generate at most", 1)
    temperature: float = shared("temperature", 0.0)
    top_p: float = shared("top_p", 1.0)
    top_k: int = shared("top_k", 0)
    seed: int = shared("seed", 0)
    stop: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Chunk:
    """New text since the last chunk, and the token ids that produced it.

    `logprobs` holds, where the engine gives them, one entry per generated token in this chunk
    (its log-probability and top alternatives); engines that do not give them leave it empty.
    """

    text: str
    token_ids: tuple[int, ...]
    elapsed: float
    logprobs: tuple[TokenLogprob, ...] = ()


class Chunker:
    """Turns the token ids an engine yields into Chunks of new text, for every local engine.

    A token can be half of a multi-byte character (byte-level BPE splits an emoji over several): the
    decoded text then ends in U+FFFD, and such tokens are held back until the character is whole,
    so no chunk shows a replacement character that the final text does not have. Tokens are also
    held while the decoded text no longer starts with what was shown (a tokenizer that cleans up
    spaces on decoding): a chunk only ever adds text. `close` gives the final text and the chunk
    with whatever was still held. What it leaves out: stop sequences (the engines cut on them).

    >>> class Bytes:  # a tokenizer whose tokens are UTF-8 bytes
    ...     def decode(self, ids, skip_special_tokens=True):
    ...         return bytes(ids).decode("utf-8", errors="replace")
    >>> c = Chunker(Bytes())
    >>> [c.add([i], (), 0.0) for i in "é!".encode()]
    [None, Chunk(text='é', token_ids=(195, 169), elapsed=0.0, logprobs=()), Chunk(text='!', token_ids=(33,), elapsed=0.0, logprobs=())]
    >>> c.close(1.0)
    ('é!', None)
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []  # every token so far
        self.shown = ""  # the text the chunks so far add up to
        self._held_ids: list[int] = []
        self._held_lp: list[TokenLogprob] = []

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def add(self, ids, logprobs, elapsed: float) -> Chunk | None:
        """The chunk these tokens complete, or None while they are held back."""
        self.ids.extend(ids)
        self._held_ids.extend(ids)
        self._held_lp.extend(logprobs)
        text = self._text()
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return None
        return self._take(text[len(self.shown):], text, elapsed)

    def close(self, elapsed: float) -> tuple[str, Chunk | None]:
        """The final text, and the last chunk if anything is still held (or the text changed)."""
        final = self._text()
        if final == self.shown and not self._held_ids:
            return final, None
        rest = final[len(self.shown):] if final.startswith(self.shown) else final
        return final, self._take(rest, final, elapsed)

    def _take(self, new: str, text: str, elapsed: float) -> Chunk:
        chunk = Chunk(new, tuple(self._held_ids), elapsed, tuple(self._held_lp))
        self.shown, self._held_ids, self._held_lp = text, [], []
        return chunk


@dataclass(frozen=True)
class GenerationResult:
    model_id: str
    prompt: str
    prompt_tokens: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "end of turn" | "end of sequence" | "max tokens" | "stop sequence" | "cancelled" | "cut off"
    time_to_first_token: float
    total_seconds: float
    engine: str = "transformers"
    logprobs: tuple[TokenLogprob, ...] = ()  # one per generated token, where the engine gives them
    generated_tokens: int | None = None  # tokens generated when `token_ids` is not known (a remote server)
    error: str | None = None  # why an answer that arrived in part stopped (a broken stream, a timeout), to show

    @property
    def new_tokens(self) -> int:
        return self.generated_tokens if self.generated_tokens is not None else len(self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        gen_time = self.total_seconds - self.time_to_first_token
        if self.new_tokens <= 1 or gen_time <= 0:
            return self.new_tokens / self.total_seconds if self.total_seconds > 0 else 0.0
        return (self.new_tokens - 1) / gen_time


def templated(tokenizer, use_chat_template: bool = True) -> bool:
    """Whether a prompt goes through the tokenizer's chat template (asked for, and there is one)."""
    return bool(use_chat_template and getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, text: str, use_chat_template: bool = True, system: str | None = None) -> str:
    """The exact string the model receives: through the chat template when asked and there is one.

    Without a chat template the system message is not dropped: it goes before the text, with a
    blank line between them, which is the closest a plain-text model gets to a system turn.
    """
    if templated(tokenizer, use_chat_template):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{system}\n\n{text}" if system else text


def encode_prompt(tokenizer, prompt: str, templated: bool) -> torch.Tensor:
    """Token ids (1, T). A templated prompt already holds its special tokens."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=not templated).input_ids
    return ids


def _eos_ids(lm: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for src in (lm.model.generation_config.eos_token_id, lm.tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    return ids


ALTERNATIVES = TRANSFORMERS.alternatives  # top alternatives kept per generated token


class _Recorder:
    """A logits processor that keeps the model's own log-probabilities of this step (it changes nothing).

    Placed first, it sees the raw scores (B, V) in float32; the streamer's put() for the token
    chosen from them comes right after, and reads that token's log-probability and the top k.
    The work per step is one log-softmax and one top-k over the vocabulary, in the worker thread.
    """

    def __init__(self, k: int = ALTERNATIVES) -> None:
        self.k = k
        self._row: torch.Tensor | None = None  # (V,) log-probabilities of the step in progress
        self._top: tuple[list[float], list[int]] = ([], [])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        row = torch.log_softmax(scores[0].float(), dim=-1)  # (V,)
        top = torch.topk(row, min(self.k, row.shape[0]))  # values, indices: (k,)
        self._row, self._top = row, (top.values.tolist(), top.indices.tolist())
        return scores

    def take(self, token_id: int) -> tuple[float, list[float], list[int]] | None:
        """The chosen token's log-probability and the step's top k (values, ids), or None if no step ran."""
        if self._row is None:
            return None
        row, self._row = self._row, None
        return float(row[token_id]), *self._top


class _QueueStreamer:
    """transformers streamer: the first put() is the prompt, each later one a new token
    (with what the recorder kept of its step, when there is one)."""

    def __init__(self, recorder: _Recorder | None = None) -> None:
        self.q: queue.Queue = queue.Queue()
        self._seen_prompt = False
        self.recorder = recorder

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        ids = [int(v) for v in value.reshape(-1).tolist()]
        kept = self.recorder.take(ids[0]) if self.recorder is not None and len(ids) == 1 else None
        self.q.put((ids, kept))

    def end(self) -> None:
        self.q.put(None)


class _SeededSampler:
    """A logits processor that draws the next token itself, from this stream's own seeded generator,
    and leaves all the mass on it, so that generate's greedy step takes exactly that token.

    transformers' own sampling draws from torch's global generator, which every generation in the
    process shares: two sampled generations at once (the compare page runs models side by side)
    would take turns with one random stream, and a seed would reproduce nothing. The draw follows
    transformers' order (temperature, top-k, top-p; playground.sampling), with only this stream's
    settings: a model's generation_config cannot add a top-k of its own.
    """

    def __init__(self, settings: GenerationSettings) -> None:
        self.sampling = SamplingSettings(temperature=settings.temperature, top_k=settings.top_k,
                                         top_p=settings.top_p, seed=settings.seed)
        self.generator = torch.Generator().manual_seed(int(settings.seed))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        picked = torch.multinomial(probs(scores, self.sampling), 1, generator=self.generator)  # (B, 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, picked, 0.0)


class _Cancel:
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class Stream:
    """An iterator of Chunks; `.result` holds the GenerationResult once it is exhausted."""

    def __init__(self, lm: LoadedModel, prompt: str, settings: GenerationSettings, templated: bool,
                 logprobs: bool = True, input_ids: torch.Tensor | None = None, constraint=None) -> None:
        validate(settings)
        if not lm.spec.can_generate:
            raise InputError(f"{lm.spec.name} cannot generate text.")
        self.lm, self.prompt, self.settings, self.templated = lm, prompt, settings, templated
        self.input_ids = encode_prompt(lm.tokenizer, prompt, templated) if input_ids is None else input_ids  # (1, T)
        self.recorder = _Recorder() if logprobs else None
        self._pieces: dict[int, str] = {}
        n = self.input_ids.shape[1]
        if n == 0:
            raise InputError("The prompt is empty: type something for the model to continue.")
        if n + settings.max_new_tokens > lm.context_length:
            raise ContextLengthError(
                f"The prompt is {n:,} tokens and {settings.max_new_tokens:,} new tokens are asked for; "
                f"{lm.spec.name}'s context is {lm.context_length:,}."
            )
        self.result: GenerationResult | None = None
        self.cancel_event = threading.Event()
        self._error: BaseException | None = None
        # a playground.constrain.ConstraintSpec: compiled here, so that a bad one is refused before generating
        self.grammar = None
        if constraint is not None:
            from playground.constrain import compile_for

            self.grammar = compile_for(constraint, lm.tokenizer, sorted(_eos_ids(lm)), settings.max_new_tokens)
        self.ticket = jobs.ticket(lm, "a generation")  # its place in the local work queue (playground.jobs)

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def prompt_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def _kwargs(self, streamer) -> dict:
        s = self.settings
        kw = dict(
            input_ids=self.input_ids,
            attention_mask=torch.ones_like(self.input_ids),
            max_new_tokens=s.max_new_tokens,
            streamer=streamer,
            pad_token_id=(self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None
                          else self.lm.tokenizer.eos_token_id),
        )
        # generate itself is always greedy: a sampled stream draws in _SeededSampler with its own generator
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        from transformers import LogitsProcessorList

        # the recorder first: it keeps the model's own distribution, before any processor reshapes it
        processors = [self.recorder] if self.recorder is not None else []
        if self.grammar is not None:  # the constraint chooses each token itself (and samples, if asked)
            from playground.constrain import LogitsProcessor

            sampling = SamplingSettings(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed)
            processors.append(LogitsProcessor(self.grammar, self.prompt_tokens, sampling,
                                              s.seed if s.temperature > 0 else None))
        elif s.temperature > 0:
            processors.append(_SeededSampler(s))
        if processors:
            kw["logits_processor"] = LogitsProcessorList(processors)
        if s.stop:
            kw.update(stop_strings=list(s.stop), tokenizer=self.lm.tokenizer)
        from transformers import StoppingCriteriaList

        kw["stopping_criteria"] = StoppingCriteriaList([_Cancel(self.cancel_event)])
        return kw

    def __iter__(self) -> Iterator[Chunk]:
        with jobs.turn(self.lm, "a generation", self.cancel_event, ticket_=self.ticket):  # waits its turn
            yield from self._generate()

    def _generate(self) -> Iterator[Chunk]:
        streamer = _QueueStreamer(self.recorder)
        kwargs = self._kwargs(streamer)

        def work() -> None:
            try:
                with torch.no_grad():
                    self.lm.model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
                streamer.end()

        start = time.perf_counter()
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        chunker = Chunker(self.lm.tokenizer)
        logprobs: list[TokenLogprob] = []
        first: float | None = None
        finished = False
        try:
            while True:
                item = streamer.q.get()
                if item is None:
                    break
                now = time.perf_counter() - start
                if first is None:
                    first = now
                new_ids, kept = item
                lps = (self._logprob(new_ids[0], kept),) if kept is not None else ()
                logprobs.extend(lps)
                chunk = chunker.add(new_ids, lps, now)
                if chunk is not None:
                    yield chunk
            finished = True
        finally:
            if not finished:  # the consumer stopped early (a page rerun): stop the worker too
                self.cancel_event.set()
        thread.join()
        total = time.perf_counter() - start
        if self._error is not None:
            err = self._error
            if isinstance(err, PlaygroundError):
                raise err
            raise PlaygroundError(f"Generation failed in {self.lm.spec.name}: {type(err).__name__}: {err}") from err
        final, last = chunker.close(total)
        if last is not None:
            yield last
        ids = chunker.ids
        self.result = GenerationResult(
            model_id=self.lm.spec.id,
            prompt=self.prompt,
            prompt_tokens=int(self.input_ids.shape[1]),
            text=final,
            token_ids=tuple(ids),
            finish_reason=self._finish_reason(ids, final),
            time_to_first_token=first if first is not None else total,
            total_seconds=total,
            logprobs=tuple(logprobs) if len(logprobs) == len(ids) else (),
        )

    def _piece(self, token_id: int) -> str:
        """A token as text (its raw piece when it is part of a multi-byte character), cached per stream."""
        pieces = self._pieces
        text = pieces.get(token_id)
        if text is None:
            text = self.lm.tokenizer.decode([token_id])
            if "\ufffd" in text:
                raw = self.lm.tokenizer.convert_ids_to_tokens(token_id)
                text = raw if isinstance(raw, str) else text
            pieces[token_id] = text
        return text

    def _logprob(self, token_id: int, kept: tuple[float, list[float], list[int]]) -> TokenLogprob:
        lp, values, top_ids = kept
        alts = tuple(TokenChoice(self._piece(i), v, i) for v, i in zip(values, top_ids))
        return TokenLogprob(self._piece(token_id), lp, token_id, alts)

    def _finish_reason(self, ids: list[int], text: str) -> str:
        if self.cancel_event.is_set():
            return "cancelled"
        if ids and ids[-1] in _eos_ids(self.lm):
            tok = self.lm.tokenizer.convert_ids_to_tokens(ids[-1])
            return "end of turn" if tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>") else "end of sequence"
        if self.settings.stop and any(s in text for s in self.settings.stop):
            return "stop sequence"
        return "max tokens"


def stream(lm: LoadedModel, text: str, settings: GenerationSettings | None = None, use_chat_template: bool = True,
           system: str | None = None, plain: bool = False, constraint=None) -> Stream:
    """Stream `text` through `lm`, via its chat template when it has one and it is asked for.

    `lm` is any loaded entry (playground.engines.EngineModel); entries on llama.cpp or a remote
    server stream through their own engine with the same settings and the same Chunk / result types.
    `plain`: special tokens typed in `text` (``<|im_end|>``) reach the model as ordinary text, not as
    control tokens (playground.special).
    `constraint` (a playground.constrain.ConstraintSpec) limits every token to the schema, regex or
    choices; an entry whose engine gives no logits refuses it (engines.why_not(spec, "constrained")).
    """
    settings = settings or GenerationSettings()
    if constraint is not None and not lm.capabilities.can("constrained"):
        from playground.engines import why_not
        from playground.errors import CapabilityError

        raise CapabilityError(f"{lm.spec.label}: {why_not(lm.spec, 'constrained')}")
    if not isinstance(lm, LoadedModel):
        if plain and lm.tokenizer is None:
            raise InputError(f"{lm.spec.name} is on a server, which tokenizes the text itself: special tokens cannot "
                             "be sent to it as plain text. Take them out of the text.")
        extra = {"plain": True} if plain else {}
        if constraint is not None:
            extra["constraint"] = constraint
        return lm.stream(text, settings, use_chat_template=use_chat_template, system=system, **extra)
    if not isinstance(text, str) or not text.strip():
        raise InputError("The prompt is empty: type something for the model to answer.")
    prompt = format_prompt(lm.tokenizer, text, use_chat_template, system)
    ids = None
    if plain:
        from playground import special  # it builds on this module

        ids = special.encode(lm.tokenizer, text, use_chat_template, system, plain=True)
    return Stream(lm, prompt, settings, templated(lm.tokenizer, use_chat_template), input_ids=ids,
                  constraint=constraint)


def generate(lm: LoadedModel, text: str, settings: GenerationSettings | None = None, use_chat_template: bool = True,
             system: str | None = None, constraint=None, plain: bool = False) -> GenerationResult:
    """Generate to the end and return the result (no streaming)."""
    s = stream(lm, text, settings, use_chat_template, system, plain=plain, constraint=constraint)
    for _ in s:
        pass
    assert s.result is not None
    return s.result

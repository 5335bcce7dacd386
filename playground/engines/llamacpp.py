"""llama.cpp: GGUF files run as they are (quantized), through llama-cpp-python.

`load(spec, progress)` opens a llama.cpp catalogue entry, a bundled file (``smollm2-135m-instruct:gguf``,
``gemma-3-270m:gguf``) or one GGUF file of a Hub repo (``gguf:owner/name/file.gguf``, fetched by
`playground.hub.download_gguf`), and returns a `LlamaModel`, which has what every engine's model has
(`playground.engines.EngineModel`):

- `stream(text, settings, use_chat_template, system)`: the prompt is formatted exactly as for a
  transformers entry (`generate.format_prompt` with the transformers tokenizer) and tokenized by that
  tokenizer. Each token is chosen here from llama.cpp's logits: greedy is the argmax; a sampled
  token is drawn from the stream's own seeded generator after temperature, top-k and top-p
  (`playground.sampling`, in transformers' order), so one seed and one set of logits pick the same
  token on either engine. Each token comes with its log-probability (log-softmax of the logits:
  T = 1, no filter) and its top `ALTERNATIVES`.
- `next_token_distribution(ids)`: the full logits (V,) after a prefix, for the Next token page and
  its walk. The KV cache is kept between calls: a prefix that extends the last one (a walk step)
  runs only its new tokens through the model.
- `position_logits(ids)`: the logits after every position (T, V) in one pass, to measure what
  quantization costs against transformers fp32 (KL, top-1 agreement).

The tokenizer is transformers': the converted folder's for a bundled file, the one transformers
reads out of the GGUF file for a Hub file (read once and cached, `loading.tokenizer_from_gguf`).
Its ids are the ids llama.cpp's own tokenizer gives for plain text, for the chat template's
special tokens and for SmolLM2's and Gemma's multi-byte text (tests/test_llamacpp.py checks a few).
Where they may differ: pre-tokenizer rules llama.cpp implements by hand for a model family it does
not know well, and a BOS token the two add differently. The ids sent to llama.cpp are always
transformers', so a prompt is the same token sequence on both engines.

Context: the KV cache is allocated for the whole context when a model opens, so n_ctx is the
model's trained context capped at `N_CTX_CAP` (4,096) tokens; `context_length` is that cap, and
a prompt plus its new tokens past it is refused with the numbers. Sliding-window models (Gemma 3)
keep a full-size cache (``swa_full``), so that a shorter prefix can be cut back to and reused.

Threads and sharing: a llama.cpp context is not safe for concurrent use, and a loaded model is
shared by every session. So a `LlamaModel` keeps a small pool of contexts over one mapped file
(up to `MAX_CONTEXTS`; a second opens only when two calls overlap). A call takes a free context
(the one whose cache shares the longest prefix with its tokens) or waits for one; a waiting
stream's `cancel()` ends the wait. Each context runs on every core (`n_threads`).

Memory: `memory_bytes` is the GGUF file (llama.cpp maps it; the weights stay in their quantized
form) plus one context's KV cache at n_ctx in f16; compute buffers and further contexts are not
counted.

What it leaves out: attention maps and hidden states (llama.cpp does not expose them);
llama.cpp's own samplers (min-p, mirostat, grammars, repetition penalties); several sequences in
one batch; split GGUF files; GPU offload.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from playground import jobs
from playground.engines import LLAMA_CPP, TokenChoice, TokenLogprob
from playground.errors import (
    CapabilityError,
    ContextLengthError,
    InputError,
    ModelLoadError,
    ModelNotCachedError,
    PlaygroundError,
)
from playground.generate import Chunk, Chunker, GenerationResult, GenerationSettings, encode_prompt, format_prompt, templated
from playground.options import validate
from playground.passes import NextTokenDistribution
from playground.registry import ModelSpec
from playground.sampling import SamplingSettings, probs

Progress = Callable[[float, str], None]
N_CTX_CAP = 4096  # tokens of context a llama.cpp entry gets (its KV cache is allocated for all of them)
MAX_CONTEXTS = 2  # llama.cpp contexts per loaded model: calls that overlap beyond this wait
N_BATCH = 512  # prompt tokens per llama_decode call; a cancel is seen between calls
ALTERNATIVES = LLAMA_CPP.alternatives  # top alternatives kept per generated token
POSITION_LOGITS_BYTES = 1 << 30  # position_logits refuses texts whose (T, V) float32 logits pass this
END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")  # as playground.generate names them
INSTALL_HINT = ("llama-cpp-python is not installed. Run scripts/setup.sh: it builds llama-cpp-python==0.3.36 "
                "from source once (about 9 minutes on 2 cores).")


def cores() -> int:
    """The cores this process may run on (llama.cpp's n_threads)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available() -> bool:
    """Whether llama-cpp-python can be imported here."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


# --- weight repacking, and the machines where it crashes ------------------------------------
#
# llama.cpp repacks some quantized weights at load time into "extra buffer types" laid out for the
# CPU's wide instructions; a build made with GGML_NATIVE on a CPU that reports AMX also repacks into
# AMX tiles. Some virtual machines report AMX but do not enable it: the first tile instruction then
# kills the whole process (SIGILL), the app's server with it. So before a model opens with its
# weights repacked, a subprocess opens it and runs two tokens; if that dies, this process opens it
# without extra buffer types (use_extra_bufts off: plain kernels, a little slower where repacking
# helps). The answer is kept per llama-cpp-python version, CPU and file in
# $PLAYGROUND_CACHE/llama-cpp-probe.json. PLAYGROUND_LLAMA_REPACK=0 or 1 skips the probe.

_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_batch=16, n_threads=1, verbose=False)
ids = llm.tokenize(b"Hello world, one two three four", add_bos=True)[:8]
llm.eval(ids)
llm.eval(ids[:1])
print("ok")
"""
_probe_lock = threading.Lock()
_open_lock = threading.Lock()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def repack_ok(path: Path) -> bool:
    """Whether llama.cpp may repack the weights of `path` on this machine (see above)."""
    env = os.environ.get("PLAYGROUND_LLAMA_REPACK", "auto").strip().lower()
    if env in ("0", "off", "false", "no"):
        return False
    if env in ("1", "on", "true", "yes"):
        return True
    import json
    import subprocess
    import sys

    import llama_cpp

    from playground.paths import cache_root

    key = f"{llama_cpp.__version__} | {_cpu()} | {path.name} | {path.stat().st_size}"
    store = cache_root() / "llama-cpp-probe.json"
    with _probe_lock:
        try:
            known = json.loads(store.read_text())
        except (OSError, ValueError):
            known = {}
        if key in known:
            return bool(known[key])
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                                  timeout=300, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
            ok = done.returncode == 0 and "ok" in done.stdout
        except (OSError, subprocess.SubprocessError):
            ok = False
        known[key] = ok
        try:
            tmp = store.with_name(f"{store.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(known, indent=1))
            os.replace(tmp, store)
        except OSError:
            pass
        return ok


@contextlib.contextmanager
def extra_buffers_off() -> Iterator[None]:
    """Every llama_cpp.Llama opened inside this block opens without extra buffer types (no repacked
    weights). Llama() takes no such argument, so its default model params are swapped for the block;
    a script that runs ``llama_cpp.server`` on a machine where repacking crashes can wrap it too:
    ``with extra_buffers_off(): runpy.run_module("llama_cpp.server", run_name="__main__")``."""
    import llama_cpp.llama_cpp as low

    with _open_lock:
        default = low.llama_model_default_params

        def without_extra_buffers():
            params = default()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            low.llama_model_default_params = default


def _llama(path: Path, repack: bool, **kwargs):
    """llama_cpp.Llama(path, **kwargs), with extra buffer types (repacked weights) on or off."""
    import llama_cpp

    if repack:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    with extra_buffers_off():
        return llama_cpp.Llama(model_path=str(path), **kwargs)


class _Cancelled(Exception):
    """A stream was cancelled while it waited for a context or read its prompt."""


@dataclass
class _Slot:
    """One llama.cpp context and the tokens its KV cache holds, positions 0..len(ids)-1."""

    llm: Any  # llama_cpp.Llama
    ids: list[int] = field(default_factory=list)
    busy: bool = False


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _kv_bytes(md: dict[str, str], n_ctx: int) -> int:
    """One context's KV cache in f16, from the GGUF metadata (0 if it does not say)."""
    arch = md.get("general.architecture", "")
    try:
        layers = int(md[f"{arch}.block_count"])
        heads = int(md[f"{arch}.attention.head_count"])
        kv_heads = int(md.get(f"{arch}.attention.head_count_kv", heads))
        width = int(md[f"{arch}.embedding_length"]) // max(heads, 1)
        k = int(md.get(f"{arch}.attention.key_length", width))
        v = int(md.get(f"{arch}.attention.value_length", width))
    except (KeyError, ValueError):
        return 0
    return n_ctx * layers * kv_heads * (k + v) * 2


class LlamaModel:
    """A GGUF file opened by llama.cpp, with a transformers tokenizer of the same vocabulary.

    Shared by every session: what it shows never changes after loading; its pool of contexts is
    guarded by a lock (see the module docstring).
    """

    def __init__(self, spec: ModelSpec, path: Path, tokenizer: Any, contexts: int = MAX_CONTEXTS,
                 n_threads: int | None = None, repack: bool | None = None) -> None:
        start = time.perf_counter()
        self.spec = spec
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.n_threads = int(n_threads or cores())
        self.max_contexts = max(1, int(contexts))
        self._cond = threading.Condition()
        self._opening = 0
        self._pieces: dict[int, str] = {}
        self.repack = repack_ok(self.path) if repack is None else bool(repack)
        first = self._open(N_CTX_CAP)
        self.metadata: dict[str, str] = dict(first.metadata)
        self.n_ctx_train = int(first._model.n_ctx_train())
        if self.n_ctx_train and self.n_ctx_train < N_CTX_CAP:  # a model trained on less gets only that
            first.close()
            first = self._open(self.n_ctx_train)
        self.n_ctx = int(first.n_ctx())
        self.n_vocab = int(first.n_vocab())
        self._vocab = first._model.vocab
        self._slots: list[_Slot] = [_Slot(first)]
        self.eos_ids = self._end_ids(first)
        self.kv_cache_bytes = _kv_bytes(self.metadata, self.n_ctx)
        self.memory_bytes = int(self.path.stat().st_size + self.kv_cache_bytes)
        self.load_seconds = time.perf_counter() - start

    # --- what every engine's model has -------------------------------------------------

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def engine(self) -> str:
        return "llama.cpp"

    @property
    def capabilities(self):
        return self.spec.capabilities

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def stream(self, text: str, settings: GenerationSettings | None = None, use_chat_template: bool = True,
               system: str | None = None, plain: bool = False, constraint=None) -> "LlamaStream":
        """Stream an answer to `text`, formatted as a transformers entry formats it (`plain`: special
        tokens typed in `text` go as ordinary text, playground.special; limited by `constraint`, a
        playground.constrain.ConstraintSpec, when one is given)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("The prompt is empty: type something for the model to answer.")
        prompt = format_prompt(self.tokenizer, text, use_chat_template, system)
        ids = None
        if plain:
            from playground import special

            ids = [int(i) for i in special.encode(self.tokenizer, text, use_chat_template, system, plain=True)[0]]
        return LlamaStream(self, prompt, settings or GenerationSettings(), templated(self.tokenizer, use_chat_template),
                           prompt_ids=ids, constraint=constraint)

    # --- distributions -----------------------------------------------------------------

    def next_token_distribution(self, input_ids: Sequence[int] | torch.Tensor) -> NextTokenDistribution:
        """The logits (V,) float32 of the token after `input_ids` (one pass over what the KV cache lacks)."""
        ids = self._check_ids(input_ids)
        with jobs.turn(self, "a next-token distribution"):
            slot = self._acquire(ids)
            try:
                logits = self._eval(slot, self._reuse(slot, ids))  # (V,)
            finally:
                self._release(slot)
        return NextTokenDistribution(self.spec.id, tuple(ids), torch.from_numpy(logits))

    def position_logits(self, input_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The logits after every position of `input_ids`: (T, V) float32, row t predicts token t + 1."""
        ids = self._check_ids(input_ids)
        need = len(ids) * self.n_vocab * 4
        if need > POSITION_LOGITS_BYTES:
            fit = POSITION_LOGITS_BYTES // (self.n_vocab * 4)
            raise InputError(
                f"The text is {len(ids):,} tokens; the logits of every position over {self.spec.name}'s "
                f"{self.n_vocab:,}-token vocabulary would take {need / 2**30:,.1f} GiB. Up to {fit:,} tokens fit: shorten it."
            )
        with jobs.turn(self, "the logits of every position"):
            slot = self._acquire(ids)
            try:
                self._forget(slot)
                logits = self._eval(slot, ids, all_logits=True)  # (T, V)
            finally:
                self._release(slot)
        return torch.from_numpy(logits)

    def facts(self):
        """What the sidebar shows of the entry (`loading.ModelFacts`), from the GGUF file's metadata."""
        n_params = int(self._slots[0].llm._model.n_params()) if self._slots else 0
        return _facts(self.spec, self.path, self.metadata, n_params, self.n_vocab, self.n_ctx,
                      templated(self.tokenizer), self.memory_bytes)

    def close(self) -> None:
        """Free every context (the model must not be used afterwards)."""
        with self._cond:
            for s in self._slots:
                s.llm.close()
            self._slots.clear()

    # --- tokens ------------------------------------------------------------------------

    def piece(self, token_id: int) -> str:
        """A token as text; its raw piece when it is part of a multi-byte character."""
        tid = int(token_id)
        text = self._pieces.get(tid)
        if text is None:
            text = self.tokenizer.decode([tid])
            if "\ufffd" in text:
                raw = self.tokenizer.convert_ids_to_tokens(tid)
                text = raw if isinstance(raw, str) else text
            self._pieces[tid] = text
        return text

    def is_end(self, token_id: int) -> bool:
        """Whether the token ends generation (llama.cpp's end-of-generation tokens and the tokenizer's EOS)."""
        return int(token_id) in self.eos_ids

    def llama_tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """llama.cpp's own tokenization of `text` (special tokens parsed), to compare with the tokenizer's."""
        slot = self._slots[0]
        return list(slot.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def _end_ids(self, llm) -> frozenset[int]:
        import llama_cpp

        ids = {i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, i)}
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        return frozenset(ids)

    def _check_ids(self, input_ids) -> list[int]:
        if isinstance(input_ids, torch.Tensor):
            input_ids = input_ids.reshape(-1).tolist()
        ids = [int(i) for i in input_ids]
        if not ids:
            raise InputError("The text is empty: type something to run the model on.")
        if len(ids) > self.n_ctx:
            raise ContextLengthError(
                f"The text is {len(ids):,} tokens; {self.spec.name}'s context on llama.cpp is {self.n_ctx:,}"
                f"{self._cap_note()}. Shorten it."
            )
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise InputError(f"Token id {bad[0]} is not in {self.spec.name}'s vocabulary of {self.n_vocab:,} tokens.")
        return ids

    def _cap_note(self) -> str:
        if self.n_ctx_train > self.n_ctx:
            return f" (the model was trained on {self.n_ctx_train:,}; LLM Playground opens llama.cpp contexts of {N_CTX_CAP:,})"
        return ""

    # --- the pool of contexts ----------------------------------------------------------

    def _open(self, n_ctx: int):
        try:
            import llama_cpp
        except ImportError as exc:
            raise ModelLoadError(INSTALL_HINT) from exc
        try:
            return _llama(
                self.path, self.repack, n_ctx=int(n_ctx), n_batch=N_BATCH, n_ubatch=N_BATCH,
                n_threads=self.n_threads, n_threads_batch=self.n_threads, logits_all=False,
                swa_full=True, use_mmap=True, verbose=False,
            )
        except MemoryError as exc:
            raise ModelLoadError(f"Out of memory while opening {self.path.name} with llama.cpp. "
                                 "Close other models (sidebar: Clear loaded models) or pick a smaller file.") from exc
        except Exception as exc:  # noqa: BLE001 - llama.cpp says little: a ValueError naming the path
            raise ModelLoadError(f"llama.cpp could not open {self.path.name} for {self.spec.id}: "
                                 f"{type(exc).__name__}: {exc}. Is it a complete GGUF file?") from exc

    def _acquire(self, ids: Sequence[int], cancel: threading.Event | None = None) -> _Slot:
        """A free context, preferring the one whose cache shares the longest prefix with `ids`."""
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled()
                free = [s for s in self._slots if not s.busy]
                if free:
                    slot = max(free, key=lambda s: _common(s.ids, ids))
                    slot.busy = True
                    return slot
                if len(self._slots) + self._opening < self.max_contexts:
                    self._opening += 1
                    break
                self._cond.wait(0.05)
        try:
            slot = _Slot(self._open(self.n_ctx), busy=True)
        finally:
            with self._cond:
                self._opening -= 1
        with self._cond:
            self._slots.append(slot)
        return slot

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            slot.busy = False
            self._cond.notify_all()

    @staticmethod
    def _forget(slot: _Slot) -> None:
        slot.llm._ctx.kv_cache_clear()
        slot.ids.clear()

    def _reuse(self, slot: _Slot, ids: list[int]) -> list[int]:
        """Cut the slot's cache back to the prefix it shares with `ids`; the tokens still to run.

        At least the last token is run again, so that its logits are fresh.
        """
        common = min(_common(slot.ids, ids), len(ids) - 1)
        if common < len(slot.ids):
            if common == 0 or not slot.llm._ctx.kv_cache_seq_rm(-1, common, -1):
                self._forget(slot)
                common = 0
            else:
                del slot.ids[common:]
        return ids[common:]

    def _eval(self, slot: _Slot, tokens: Sequence[int], cancel: threading.Event | None = None,
              all_logits: bool = False) -> np.ndarray:
        """Run `tokens` after what the slot holds; the last position's logits (V,), or every one's (T, V)."""
        llm, V = slot.llm, self.n_vocab
        rows = []
        for i in range(0, len(tokens), N_BATCH):
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            part = [int(t) for t in tokens[i:i + N_BATCH]]
            llm._batch.set_batch(batch=part, n_past=len(slot.ids), logits_all=all_logits)
            try:
                llm._ctx.decode(llm._batch)
            except Exception as exc:  # noqa: BLE001 - llama_decode returned an error code
                at = len(slot.ids)
                self._forget(slot)
                raise PlaygroundError(f"llama.cpp failed on {len(part)} tokens at position {at:,} of "
                                      f"{self.spec.name}: {exc}") from exc
            slot.ids.extend(part)
            if all_logits:
                rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(part), V)).copy())
        if all_logits:
            return np.concatenate(rows) if rows else np.zeros((0, V), dtype=np.float32)
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(V,)).copy()


class LlamaStream:
    """An iterator of `Chunk`s from a llama.cpp model; `.result` holds the GenerationResult once it is exhausted.

    The tokens are generated in a worker thread, which holds one context of the model until the
    answer ends; `cancel()` stops it at the next token (or ends its wait for a context).
    """

    def __init__(self, lm: LlamaModel, prompt: str, settings: GenerationSettings, templated: bool,
                 prompt_ids: list[int] | None = None, constraint=None) -> None:
        validate(settings)
        self.lm, self.prompt, self.settings, self.templated = lm, prompt, settings, templated
        self.prompt_ids = ([int(i) for i in encode_prompt(lm.tokenizer, prompt, templated)[0].tolist()]
                           if prompt_ids is None else list(prompt_ids))
        n = len(self.prompt_ids)
        if n == 0:
            raise InputError("The prompt is empty: type something for the model to continue.")
        if n + settings.max_new_tokens > lm.context_length:
            raise ContextLengthError(
                f"The prompt is {n:,} tokens and {settings.max_new_tokens:,} new tokens are asked for; "
                f"{lm.spec.name}'s context on llama.cpp is {lm.context_length:,}{lm._cap_note()}."
            )
        self.result: GenerationResult | None = None
        self.cancel_event = threading.Event()
        self._error: BaseException | None = None
        self._last: int | None = None  # the token the worker stopped on, if it was an end token
        self._stopped = False  # a stop string appeared
        self.grammar = None  # the constraint, compiled before anything runs (playground.constrain)
        if constraint is not None:
            from playground.constrain import compile_for

            self.grammar = compile_for(constraint, lm.tokenizer, sorted(lm.eos_ids), settings.max_new_tokens)
        self.ticket = jobs.ticket(lm, "a generation")  # its place in the local work queue (playground.jobs)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def cancel(self) -> None:
        self.cancel_event.set()

    def _choose(self, logits: torch.Tensor, generator: torch.Generator | None,
                sampling: SamplingSettings) -> tuple[int, TokenLogprob]:
        lm = self.lm
        lse = torch.logsumexp(logits, dim=0)  # log of the softmax's denominator
        top = torch.topk(logits, ALTERNATIVES)  # values, indices: (k,)
        if generator is None:
            tok = int(top.indices[0])
        else:
            tok = int(torch.multinomial(probs(logits[None], sampling), 1, generator=generator)[0, 0])
        alts = tuple(TokenChoice(lm.piece(i), float(v - lse), int(i))
                     for v, i in zip(top.values.tolist(), top.indices.tolist()))
        return tok, TokenLogprob(lm.piece(tok), float(logits[tok] - lse), tok, alts)

    def _work(self, q: queue.Queue) -> None:
        lm, s, cancel = self.lm, self.settings, self.cancel_event
        slot = None
        try:
            slot = lm._acquire(self.prompt_ids, cancel)
            # The prompt always runs from an empty cache: llama.cpp's logits depend slightly on how the
            # tokens were batched, and a greedy answer that changed with what ran before would be no answer.
            lm._forget(slot)
            logits = torch.from_numpy(lm._eval(slot, self.prompt_ids, cancel))  # (V,)
            sampling = SamplingSettings(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed)
            generator = torch.Generator().manual_seed(int(s.seed)) if s.temperature > 0 else None
            ids: list[int] = []
            guide = None
            if self.grammar is not None:
                from playground.constrain import Guide

                guide = Guide(self.grammar)
            for step in range(s.max_new_tokens):
                if cancel.is_set():
                    break
                if guide is not None:  # the constraint picks the token; its log-probability is the model's own
                    _, lp = self._choose(logits, None, sampling)
                    tok = guide.choose(logits, generator, sampling)
                    lp = TokenLogprob(lm.piece(tok), float(logits[tok] - torch.logsumexp(logits, 0)), tok, lp.alternatives)
                else:
                    tok, lp = self._choose(logits, generator, sampling)
                ids.append(tok)
                q.put((tok, lp))
                if lm.is_end(tok):
                    self._last = tok
                    break
                if s.stop and any(x in lm.tokenizer.decode(ids, skip_special_tokens=True) for x in s.stop):
                    self._stopped = True
                    break
                if step + 1 < s.max_new_tokens and not cancel.is_set():
                    logits = torch.from_numpy(lm._eval(slot, [tok]))  # (V,)
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc
        finally:
            if slot is not None:
                lm._release(slot)
            q.put(None)

    def __iter__(self) -> Iterator[Chunk]:
        with jobs.turn(self.lm, "a generation", self.cancel_event, ticket_=self.ticket):  # waits its turn
            yield from self._generate()

    def _generate(self) -> Iterator[Chunk]:
        q: queue.Queue = queue.Queue()
        start = time.perf_counter()
        thread = threading.Thread(target=self._work, args=(q,), daemon=True, name=f"llama.cpp {self.lm.spec.id}")
        thread.start()
        chunker = Chunker(self.lm.tokenizer)
        logprobs: list[TokenLogprob] = []
        first: float | None = None
        finished = False
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                now = time.perf_counter() - start
                if first is None:
                    first = now
                tid, lp = item
                logprobs.append(lp)
                chunk = chunker.add((tid,), (lp,), now)
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
            raise PlaygroundError(f"Generation failed in {self.lm.spec.name} (llama.cpp): {type(err).__name__}: {err}") from err
        final, last = chunker.close(total)
        if last is not None:
            yield last
        ids = chunker.ids
        self.result = GenerationResult(
            model_id=self.lm.spec.id,
            prompt=self.prompt,
            prompt_tokens=len(self.prompt_ids),
            text=final,
            token_ids=tuple(ids),
            finish_reason=self._finish_reason(),
            time_to_first_token=first if first is not None else total,
            total_seconds=total,
            engine="llama.cpp",
            logprobs=tuple(logprobs),
        )

    def _finish_reason(self) -> str:
        if self.cancel_event.is_set():
            return "cancelled"
        if self._last is not None:
            return "end of turn" if self.lm.tokenizer.convert_ids_to_tokens(self._last) in END_OF_TURN else "end of sequence"
        if self._stopped:
            return "stop sequence"
        return "max tokens"


# --- loading -------------------------------------------------------------------------------


def gguf_path(spec: ModelSpec, progress: Progress | None = None) -> Path:
    """The GGUF file of a llama.cpp entry on this machine (a Hub file is downloaded if it is not cached)."""
    from playground import loading

    return loading.gguf_path(spec.id, progress)


def hub_gguf_path(spec: ModelSpec, progress: Progress | None = None) -> Path:
    """A Hub GGUF entry's file: the cached copy, else downloaded (refused first if it will not fit)."""
    from playground import hub

    return hub.download_gguf(spec.gguf_repo, spec.gguf_file, progress)


def cached_gguf(spec: ModelSpec) -> Path | None:
    """A Hub GGUF entry's file if it is in the local cache; never touches the network."""
    from playground import hub

    return hub.local_gguf(spec.gguf_repo, spec.gguf_file) if spec.gguf_repo else None


def cached_gguf_entries() -> list[ModelSpec]:
    """Catalogue entries of the Hub GGUF files in the local cache (single-file ones)."""
    from playground import hub
    from playground.errors import UnknownModelError
    from playground.registry import get_model

    out = []
    for f in hub.cached_gguf_files():
        if not f.is_split:
            try:
                out.append(get_model(f.id))
            except UnknownModelError:  # a file name the catalogue does not take
                pass
    return out


def _facts(spec: ModelSpec, path: Path, md: dict[str, str], n_params: int, n_vocab: int, n_ctx: int,
           chat: bool, memory: int):
    from playground.loading import ModelFacts

    arch = md.get("general.architecture", "?")

    def num(key: str, default: int = 0) -> int:
        try:
            return int(md.get(f"{arch}.{key}", default))
        except ValueError:  # a per-layer array, which llama.cpp gives as text
            return default

    heads = num("attention.head_count")
    return ModelFacts(
        id=spec.id, name=spec.label, architecture=f"{arch} (GGUF)", model_type=arch, parameters=int(n_params),
        layers=num("block_count"), heads=heads, kv_heads=num("attention.head_count_kv", heads),
        hidden_size=num("embedding_length"), vocab_size=int(n_vocab), context_length=int(n_ctx),
        precision=f"{spec.precision} (GGUF, run as it is by llama.cpp)", license=spec.license, origin=spec.origin,
        memory_bytes=int(memory), disk_bytes=path.stat().st_size, has_chat_template=chat, is_decoder=True,
        engine="llama.cpp",
    )


def facts(spec: ModelSpec):
    """The facts of a llama.cpp entry whose file is on disk, from its GGUF metadata, without loading
    the weights (llama.cpp reads the vocabulary alone: under a second for 49k tokens, a few for 262k)."""
    path = gguf_path(spec) if spec.source == "bundled" else cached_gguf(spec)
    if path is None:
        raise ModelNotCachedError(f"{spec.gguf_file} of {spec.gguf_repo} is not downloaded yet: download it first.")
    if not available():
        raise ModelLoadError(INSTALL_HINT)
    llm = _llama(path, False, vocab_only=True, n_ctx=8, n_batch=8, verbose=False)
    try:
        md = dict(llm.metadata)
        arch = md.get("general.architecture", "")
        trained = int(md.get(f"{arch}.context_length", 0) or 0)
        n_ctx = min(trained, N_CTX_CAP) if trained else N_CTX_CAP
        return _facts(spec, path, md, llm._model.n_params(), llm.n_vocab(), n_ctx, "tokenizer.chat_template" in md,
                      path.stat().st_size + _kv_bytes(md, n_ctx))
    finally:
        llm.close()


def load_tokenizer(spec: ModelSpec, path: Path, progress: Progress | None = None):
    """The transformers tokenizer of a llama.cpp entry: the converted folder's for a bundled model
    if it is there, otherwise the one in the GGUF file (read once, then cached)."""
    from playground import loading

    if spec.source == "bundled" and loading.is_prepared(spec.base_id):
        return loading.load_tokenizer(spec.base_id)
    return loading.tokenizer_from_gguf(path, spec.base_id if spec.source == "bundled" else spec.id, progress)


def load(spec: ModelSpec, progress: Progress | None = None, contexts: int = MAX_CONTEXTS) -> LlamaModel:
    """Open a llama.cpp entry: its GGUF file, its tokenizer, one context (more open as calls overlap)."""
    report = progress or (lambda f, m: None)
    start = time.perf_counter()
    if not spec.can_generate or spec.engine != "llama.cpp":
        raise CapabilityError(f"{spec.id} is not a llama.cpp entry (its engine is {spec.engine}).")
    if not available():
        raise ModelLoadError(INSTALL_HINT)
    path = gguf_path(spec, lambda f, m: report(0.7 * f, m))
    tokenizer = load_tokenizer(spec, path, lambda f, m: report(0.7 + 0.2 * f, m))
    report(0.9, f"opening {path.name} with llama.cpp ({cores()} threads)")
    lm = LlamaModel(spec, path, tokenizer, contexts=contexts)
    if lm.n_vocab < len(tokenizer):
        lm.close()
        raise ModelLoadError(
            f"{spec.id}: the GGUF file has {lm.n_vocab:,} tokens and its tokenizer {len(tokenizer):,}; "
            "the two do not describe the same vocabulary."
        )
    lm.load_seconds = time.perf_counter() - start
    report(1.0, "ready")
    return lm

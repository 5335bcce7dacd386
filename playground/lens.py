"""The logit lens: what each layer would predict if the model stopped there.

A decoder's last hidden state goes through the final norm and the unembedding (`lm_head`) to
give the next-token logits. The logit lens sends *every* layer's hidden state, at every
position, through the same final norm and unembedding: row 0 is the input embeddings (after
Gemma's scaling by sqrt(hidden size)), row l the output of layer l, and the last row is the
model's own prediction. `logit_lens(lm, ids)` runs the model once (`output_hidden_states=True`,
SDPA attention: playground.attend) and returns a `LogitLens`: each layer's most likely next
token and its probability at each position, and the probability of the final prediction (and of
any tracked tokens) through the layers. `follow(lm, lens, position, token_id)` gives one token's
probability and rank through the layers at one position from the kept states, without running
the model again.

Memory: the (layers, T, V) logits are never held at once (Gemma 3's 262,144-token vocabulary
over 19 rows x 512 positions would be 9.5 GiB in float32). The normed states (layers, T, H) are
kept, and the unembedding runs on blocks of rows of at most `BLOCK_BYTES` of logits, each block
reduced at once to its top token, its probability and the tracked tokens' probabilities.

Which models: any transformers causal LM whose output embeddings are `get_output_embeddings()`
and whose final norm is an attribute of its decoder (`get_decoder()`, else `base_model`) named
`norm` (Llama, SmolLM2, Mistral, Qwen, Gemma 1-3), `final_layernorm` (Phi), `ln_f` (GPT-2,
GPT-J, Bloom), `final_layer_norm` (OPT) or `norm_f`. Gemma 2 / 3's `final_logit_softcapping` is
applied when the config sets it. transformers (5.x) gives `hidden_states[-1]` *after* the final
norm for these models (it ties the last entry to `last_hidden_state`), but a config may turn
that off (`tie_last_hidden_states`); so the last row is checked against the model's own logits
for the last position, both as given and normed once more, and the one that matches is used.
A model whose logits neither reproduces (one that scales its logits in a way not known here) is
refused with a CapabilityError rather than shown wrong.

What it leaves out: encoders (no next token), the tuned lens (a learned map per layer), the
llama.cpp and remote engines (no hidden states), and rendering (components.lens). The dynamic
int8 variants quantize the head's input per call, so the same position gets a different
distribution alone than among others (0.54 against 0.46 for SmolLM2's top token on the default
text); their rows go through the head one at a time, as the Next token page's one-position pass
does, which matches that page exactly and is slower.
"""

from __future__ import annotations

import inspect as pyinspect  # the standard library
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from playground import jobs
from playground.errors import CapabilityError, InputError
from playground.limits import Limit
from playground.loading import LoadedModel
from playground.options import option
from playground.passes import _labels, check_length

MAX_TOKENS = Limit(512, "tokens", "the logit lens sends every layer's state at every position through the "
                                  "unembedding")
BLOCK_BYTES = 64 << 20  # float32 logits computed at once: 64 rows of Gemma's 262,144 tokens
NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f")
DEFAULT_TEXT = "The Eiffel Tower is in the city of"

Progress = Callable[[float, str], None]

_lock = threading.Lock()
RUNS = 0  # how many times `logit_lens` ran a model in this process (a test checks pickers do not rerun it)


@dataclass(frozen=True)
class LensSettings:
    """The page's view settings, with the bounds its widgets are built from."""

    window: int = option(24, 8, 64, "Positions the grid shows at once", step=4)


@dataclass(frozen=True)
class LogitLens:
    """Every layer's next-token prediction at every position of one text.

    Row 0 is the input embeddings, row l (1..layers) the output of layer l; the last row is the
    model's own next-token distribution. Column t is the prediction *after* token t.
    """

    model_id: str
    input_ids: tuple[int, ...]  # (T,)
    labels: tuple[str, ...]  # readable text of each input token (" cat"), for the axis
    top_ids: torch.Tensor  # (layers + 1, T) int64: the most likely next token of each row and position
    top_probs: torch.Tensor  # (layers + 1, T) float32: its probability
    top_texts: tuple[tuple[str, ...], ...]  # (layers + 1, T): the decoded top tokens
    final_probs: torch.Tensor  # (layers + 1, T) float32: probability of the last row's top token, per row
    tracked_ids: tuple[int, ...]  # (K,)
    tracked_probs: torch.Tensor  # (K, layers + 1, T) float32: each tracked token's probability
    states: torch.Tensor  # (layers + 1, T, H): each row's hidden state after the final norm (what the head reads)
    output_was_normed: bool  # hidden_states[-1] came already through the final norm
    norm_name: str  # where the final norm was found, e.g. "model.norm"
    vocab_size: int
    softcap: float | None = None  # final_logit_softcapping applied after the head (Gemma 2 / 3), if set

    @property
    def num_rows(self) -> int:
        return int(self.top_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.top_ids.shape[1])

    def row_name(self, row: int) -> str:
        return "embeddings" if row == 0 else f"layer {row}"

    def first_row_with_final(self, position: int) -> int:
        """The first row from which the final prediction stays the top token at `position`."""
        col = self.top_ids[:, position]  # (layers + 1,)
        row = len(col) - 1
        while row > 0 and col[row - 1] == col[-1]:
            row -= 1
        return row


@dataclass(frozen=True)
class Trajectory:
    """One token's probability and rank through the rows at one position."""

    position: int
    token_id: int
    text: str
    probs: torch.Tensor  # (layers + 1,) float32
    ranks: torch.Tensor  # (layers + 1,) int64, 1 = the row's most likely token


# --- finding the parts ------------------------------------------------------------------------


def _parts(model) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(final norm, unembedding, the norm's name) of a causal LM."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise CapabilityError(f"{type(model).__name__} has no output embeddings (lm_head): the logit lens needs them.")
    bases = []
    try:
        bases.append(model.get_decoder())
    except (AttributeError, NotImplementedError, ValueError):
        pass
    bases.append(getattr(model, "base_model", None))
    for base in bases:
        if base is None:
            continue
        for name in NORM_NAMES:
            norm = getattr(base, name, None)
            if isinstance(norm, torch.nn.Module):
                prefix = next((n for n, m in model.named_modules() if m is base), "")
                return norm, head, f"{prefix}.{name}" if prefix else name
    raise CapabilityError(
        f"{type(model).__name__} has no final norm where the logit lens looks (its decoder's "
        f"{', '.join(NORM_NAMES)}): the lens covers Llama, Gemma, Mistral, Qwen, Phi, GPT-2 and OPT-style models."
    )


def _quantized(head) -> bool:
    """A dynamically quantized head (the int8 variants): its weight is packed, not a tensor."""
    return not isinstance(getattr(head, "weight", None), torch.Tensor)


def _block(head, vocab: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows per call of the head: as many as fit in `block_bytes` of float32 logits. Dynamic int8
    quantizes each call's input as a whole, so there it is one row per call, as the Next token page's
    one-position pass does, and the last row is that page's distribution exactly."""
    return 1 if _quantized(head) else max(1, block_bytes // (4 * vocab))


def _softcap(model) -> float | None:
    cfg = getattr(model.config, "text_config", None) or model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    return float(cap) if cap else None


def _logits(head, rows: torch.Tensor, cap: float | None) -> torch.Tensor:
    """(N, H) -> (N, V) float32 logits, as the model's head computes them."""
    logits = head(rows).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# --- input ------------------------------------------------------------------------------------


def encode(lm: LoadedModel, text: str) -> list[int]:
    """The ids the model reads for `text` (with Gemma's <bos>), checked against the lens's bound."""
    if not text or not text.strip():
        raise InputError("The text is empty: type something to see what each layer predicts.")
    ids = list(lm.tokenizer(text, add_special_tokens=True)["input_ids"])
    check_ids(lm, ids)
    return ids


def check_ids(lm: LoadedModel, ids: Sequence[int]) -> None:
    check_length(lm, len(ids))  # empty, or past the model's context
    MAX_TOKENS.check(len(ids), f"The text for {lm.spec.name}", "Shorten it.")


def token_of(lm: LoadedModel, text: str) -> tuple[int, str | None]:
    """The first token of `text` without special tokens, and a note when the text is several tokens."""
    if not text:
        raise InputError("Type a token to follow, e.g. ' Paris' (with its leading space).")
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"{text!r} gives no token in {lm.spec.name}'s tokenizer; type another.")
    note = None
    if len(ids) > 1:
        pieces = [lm.tokenizer.decode([i]) for i in ids]
        note = (f"{text!r} is {len(ids)} tokens for {lm.spec.name} ({' + '.join(repr(p) for p in pieces)}); "
                f"the first, {pieces[0]!r}, is followed.")
    return int(ids[0]), note


# --- the lens ---------------------------------------------------------------------------------


def _reduce(head, rows: torch.Tensor, tracked: torch.Tensor, cap: float | None, block: int,
            tick: Callable[[int], None] | None = None, ranks: bool = False) -> tuple[torch.Tensor, ...]:
    """Top token, its probability, and the tracked tokens' probabilities (and ranks), block by block.

    rows (N, H); tracked (N, K) token ids per row -> top_ids (N,), top_p (N,), p (N, K), rank (N, K).
    Ranks cost a pass over the vocabulary per tracked token, more than the logsumexp: only `follow`
    asks for them (one position); without `ranks` they are left at 0.
    """
    n, k = rows.shape[0], tracked.shape[1]
    top_ids = torch.empty(n, dtype=torch.long)
    top_p = torch.empty(n, dtype=torch.float32)
    probs = torch.empty((n, k), dtype=torch.float32)
    rank = torch.zeros((n, k), dtype=torch.long)
    for a in range(0, n, block):
        b = min(a + block, n)
        logits = _logits(head, rows[a:b], cap)  # (c, V) float32, dropped after this block
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (c, 1)
        best, idx = logits.max(dim=-1)  # (c,)
        top_ids[a:b] = idx
        top_p[a:b] = torch.exp(best - lse[:, 0])
        if k:
            picked = logits.gather(1, tracked[a:b])  # (c, K)
            probs[a:b] = torch.exp(picked - lse)
            for j in range(k if ranks else 0):
                rank[a:b, j] = (logits > picked[:, j : j + 1]).sum(dim=-1) + 1
        if tick:
            tick(b - a)
    return top_ids, top_p, probs, rank


def kept_bytes(lm: LoadedModel, text: str) -> int:
    """What `run(lm, text)` keeps, in bytes, before it runs: the normed states (rows, T, H) float32 and the
    per-row tables (top ids, probabilities). Raises as `run` does for an empty or too long text."""
    if not isinstance(lm, LoadedModel):
        return 0  # run() says why this engine has no lens
    ids = encode(lm, text)
    cfg = getattr(lm.model.config, "text_config", None) or lm.model.config
    rows, t = lm.num_layers + 1, len(ids)
    return rows * t * int(cfg.hidden_size) * 4 + rows * t * (8 + 4 + 4)


def logit_lens(lm: LoadedModel, input_ids: Sequence[int] | torch.Tensor, track: Sequence[int] = (),
               progress: Progress | None = None, block_bytes: int = BLOCK_BYTES) -> LogitLens:
    """Every layer's prediction at every position of `input_ids`, from one forward pass.

    `track`: token ids whose probability is kept at every row and position. Raises InputError for
    an empty text, ContextLengthError past the model's context, LimitError past MAX_TOKENS, and
    CapabilityError for a model the lens cannot reproduce (see the module docstring).
    """
    global RUNS
    if not isinstance(lm, LoadedModel):
        from playground.engines import why_not

        raise CapabilityError(why_not(lm.spec, "hidden_states") or f"{lm.spec.name} gives no hidden states.")
    ids = torch.as_tensor(list(input_ids) if not torch.is_tensor(input_ids) else input_ids, dtype=torch.long).reshape(-1)
    check_ids(lm, ids.tolist())
    model = lm.model
    norm, head, norm_name = _parts(model)
    cap = _softcap(model)
    report = progress or (lambda f, m: None)
    report(0.0, f"running {lm.spec.name} over {ids.numel():,} tokens")
    x = ids.reshape(1, -1)  # (1, T)
    kwargs = {"logits_to_keep": 1}  # the model's own logits for the last position only
    if "logits_to_keep" not in pyinspect.signature(model.forward).parameters:
        kwargs = {}
    with _lock:
        RUNS += 1
    with torch.no_grad(), jobs.turn(lm, "the logit lens"):  # the pass and the unembedding take one turn
        out = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True, **kwargs)
        hidden = out.hidden_states  # (layers + 1) x (1, T, H)
        own = out.logits[0, -1].float()  # (V,): the model's own logits for the last position
        vocab = int(own.shape[-1])
        bad = [int(i) for i in track if not 0 <= int(i) < vocab]
        if bad:
            raise InputError(f"Token id {bad[0]} is outside {lm.spec.name}'s vocabulary of {vocab:,}.")
        last = hidden[-1][0]  # (T, H)
        as_given = _logits(head, last[-1:], cap)[0]
        normed_again = _logits(head, norm(last[-1:]), cap)[0]
        scale = max(1.0, float(own.abs().max()))
        err_given = float((as_given - own).abs().max())
        err_normed = float((normed_again - own).abs().max())
        tol = (2e-2 if last.dtype in (torch.bfloat16, torch.float16) else 2e-3) * scale
        if min(err_given, err_normed) > tol:
            raise CapabilityError(
                f"The logit lens cannot reproduce {lm.spec.name}'s own logits from its last hidden state through "
                f"{norm_name} and the head (off by {min(err_given, err_normed):.3g}); this architecture transforms "
                "its logits in a way the lens does not know."
            )
        output_was_normed = err_given <= err_normed
        # every row through the final norm; the last one only if transformers has not normed it already
        states = torch.stack([norm(h[0]) for h in hidden[:-1]] + [last if output_was_normed else norm(last)])  # (L+1, T, H)
        del hidden, out
        rows_n, t, h = states.shape
        block = _block(head, vocab, block_bytes)
        done = [0]
        total = rows_n * t

        def tick(n: int) -> None:
            done[0] += n
            report(0.05 + 0.95 * done[0] / total, f"unembedding {done[0]:,} of {total:,} layer x position states")

        user = torch.as_tensor(list(track), dtype=torch.long).reshape(1, -1)  # (1, K)
        k = user.shape[1]
        # the last row first: its top tokens are the final predictions tracked through the other rows
        f_ids, f_p, f_tr, _ = _reduce(head, states[-1], user.expand(t, k), cap, block, tick)
        tracked = torch.cat([f_ids.reshape(t, 1), user.expand(t, k)], dim=1)  # (T, 1 + K)
        flat = states[:-1].reshape(-1, h)  # ((L) * T, H)
        e_ids, e_p, e_tr, _ = _reduce(head, flat, tracked.repeat(rows_n - 1, 1), cap, block, tick)
    top_ids = torch.cat([e_ids.reshape(rows_n - 1, t), f_ids.reshape(1, t)])  # (L+1, T)
    top_probs = torch.cat([e_p.reshape(rows_n - 1, t), f_p.reshape(1, t)])
    final_probs = torch.cat([e_tr[:, 0].reshape(rows_n - 1, t), f_p.reshape(1, t)])
    tracked_probs = torch.cat([e_tr[:, 1:].reshape(rows_n - 1, t, k), f_tr.reshape(1, t, k)]).permute(2, 0, 1)  # (K, L+1, T)
    id_list = ids.tolist()
    pieces = lm.tokenizer.convert_ids_to_tokens(id_list)
    texts = {i: lm.tokenizer.decode([i]) for i in set(top_ids.reshape(-1).tolist())}
    report(1.0, "done")
    return LogitLens(
        model_id=lm.spec.id,
        input_ids=tuple(id_list),
        labels=_labels(lm.tokenizer, id_list, pieces),
        top_ids=top_ids,
        top_probs=top_probs,
        top_texts=tuple(tuple(texts[i] for i in row) for row in top_ids.tolist()),
        final_probs=final_probs,
            tracked_ids=tuple(int(i) for i in track),
        tracked_probs=tracked_probs.contiguous(),
        states=states,
        output_was_normed=output_was_normed,
        norm_name=norm_name,
        vocab_size=vocab,
        softcap=cap,
    )


def run(lm: LoadedModel, text: str, track: Sequence[int] = (), progress: Progress | None = None) -> LogitLens:
    """`logit_lens` over `text` (encoded with the model's special tokens)."""
    return logit_lens(lm, encode(lm, text), track, progress)


def follow(lm: LoadedModel, lens: LogitLens, position: int, token_id: int) -> Trajectory:
    """`token_id`'s probability and rank in every row at `position`, from the kept states (no model run)."""
    if lens.model_id != lm.spec.id:
        raise InputError(f"This lens was made by {lens.model_id}, not {lm.spec.id}: run it again.")
    if not 0 <= position < lens.num_tokens:
        raise InputError(f"Position {position} is outside the text's {lens.num_tokens} tokens (0 to {lens.num_tokens - 1}).")
    _, head, _ = _parts(lm.model)
    vocab = lens.vocab_size
    if not 0 <= token_id < vocab:
        raise InputError(f"Token id {token_id} is outside {lm.spec.name}'s vocabulary of {vocab:,}.")
    rows = lens.states[:, position]  # (L+1, H)
    with torch.no_grad():
        _, _, p, rank = _reduce(head, rows, torch.full((rows.shape[0], 1), int(token_id)), lens.softcap,
                                _block(head, vocab), ranks=True)
    return Trajectory(position, int(token_id), lm.tokenizer.decode([int(token_id)]), p[:, 0].clone(), rank[:, 0].clone())


def candidates(lens: LogitLens, position: int, lm: LoadedModel, n: int = 8) -> list[int]:
    """Tokens worth following at `position`: the final top-n, then every row's top token, without repeats."""
    last = lens.states[-1, position : position + 1]  # (1, H)
    _, head, _ = _parts(lm.model)
    with torch.no_grad():
        top = torch.topk(_logits(head, last, lens.softcap)[0], n).indices.tolist()
    seen = dict.fromkeys(int(i) for i in top)
    for i in lens.top_ids[:, position].tolist():
        seen.setdefault(int(i))
    return list(seen)

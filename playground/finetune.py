"""Fine-tuning with LoRA: a bundled causal LM adapted to a few dozen prompt/response pairs, on the CPU.

LoRA (low-rank adaptation, via `peft`) freezes every weight of the model and adds, beside each
chosen Linear layer W (out x in), two small matrices B (out x r) and A (r x in) whose product,
scaled by alpha / r, is added to W's output. Only A and B train: for SmolLM2 with rank 8 on
q_proj and v_proj that is 460,800 numbers of 135 million (0.34 %), so the optimizer state is a few
megabytes and the saved adapter about 1.8 MB.

A run lives in its own folder, ``data_root()/finetune/<name>/``:

- ``run.json``: the base model, the settings, the data's hash and where it came from, the split;
- ``examples.jsonl``: the prompt/response pairs it trains on (so a resumed run reads the same data);
- ``checkpoint/``: the adapter as peft writes it (``adapter_model.safetensors`` +
  ``adapter_config.json``), the AdamW state (``optimizer.safetensors``: never a pickle), and
  ``manifest.json`` (settings, data hash, the step reached, the loss history). It is written to a
  temporary folder, marked complete with every file's size (as `playground.loading.prepare` does),
  then renamed into place; a folder without its marker is never read;
- ``progress.jsonl``: one line per step (and per held-out evaluation) as the run goes; the page
  draws the live curve from it;
- ``worker.log``: the training process's own output.

Training runs in a child process (`start`): `python -m playground.finetune <folder>`, niced and
with `LoraSettings.threads` torch threads (1 by default), so on a 2-core machine shared by several
sessions the pages of the others stay responsive, and so that the base model it trains is its own
copy, never the one the app's model cache shares between sessions. It survives a page switch and
the session that started it: the registry of runs is this module (process-level), keyed by run
name, and everything a page shows is read from the run's folder. One training runs at a time per
machine (a file lock the worker holds); a second is refused with a message naming the one running.
Stopping writes a ``stop`` file; the worker checkpoints at the next step and ends; `start(...,
resume=True)` continues from the checkpoint's step with the same optimizer state and the same
batches (the batch of step s is drawn from a generator seeded by (seed, s)), so a run stopped and
resumed gives the losses an unbroken run gives. `train()` is the same loop in this process (tests,
the bench).

A saved run joins the catalogue as ``lora:<name>`` (playground.registry): its base's tokenizer and
the adapter merged into a fresh copy of the base's weights (`load_tuned`), so every page runs it
like any transformers entry.

What it leaves out: QLoRA (no 4-bit kernels on this CPU build), full fine-tuning, learning-rate
schedules (the rate is constant, so a resumed run needs no schedule state), dropout (off, so a run
is deterministic), models other than the bundled causal LMs, and rendering (components/finetune.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playground.errors import CapabilityError, InputError, PlaygroundError, UnknownModelError, WouldReplaceError
from playground.limits import Limit
from playground.options import option, shared, validate
from playground.paths import data_root
from playground.registry import BUNDLED, LORA_PREFIX, ModelSpec

BASES = ("smollm2-135m-instruct", "gemma-3-270m")  # the bundled causal LMs a run can adapt
DEFAULT_BASE = BASES[0]
EXAMPLES_FILE = Path(__file__).resolve().parent / "data" / "pirate.jsonl"
EXAMPLES_NAME = "pirate"  # the bundled examples: every answer starts "Ahoy, matey!" and ends "Arr!"
MAX_EXAMPLES = Limit(5_000, "examples", "prompt/response pairs one training reads")
MIN_EXAMPLES = 2
EXAMPLE_CHARS = Limit(4_000, "characters", "one prompt or response of a training example")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MARKER = ".complete.json"
CHECKPOINT_EVERY = 25  # steps between checkpoints while running (and at a stop and at the end)
NICE = 10  # the worker's niceness: other sessions' pages win the CPU
PROMPT_COLUMNS = ("prompt", "instruction", "question", "input")
RESPONSE_COLUMNS = ("response", "completion", "answer", "output")
BEFORE_AFTER_PROMPTS = ("What is the capital of Italy?", "How do I make a cup of tea?", "Why is the sky blue?")

# Calibration of the estimate (bench/bench_finetune.py measured these on this 2-core machine, loaded by
# other sessions; see docs/bench-finetune.md): FLOP/s one torch thread sustains on a LoRA step, and the
# memory a training process holds beyond its weights.
GFLOPS_PER_THREAD = 18.0  # 15-18 measured under load (docs/bench-finetune.md); about 60 on a quiet machine
PROCESS_BYTES = 600 << 20  # torch + transformers + peft imported, the tokenizer, allocator slack
ACTIVATION_FACTOR = 34  # float32 numbers kept per token per layer per hidden unit for the backward pass
LOGITS_COPIES = 4  # logits (B, T, V) in float32: the logits, the loss's float copy, log-softmax, its grad

Event = Callable[[dict], None]


class TrainingBusyError(PlaygroundError):
    """A training is already running on this machine; one runs at a time."""


def _cpus() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class LoraSettings:
    """What a LoRA run is: the sliders are built from these bounds and `validate` checks the same ones."""

    rank: int = option(8, 1, 64, "r, the inner size of the two small matrices beside each adapted layer: more "
                                 "is more capacity (and more numbers to train); 4-16 is plenty for a style", 1)
    alpha: int = option(16, 1, 256, "the update B·A is scaled by alpha / rank: a larger alpha is a stronger "
                                    "adapter for the same rank (alpha = 2 x rank is the usual choice)", 1)
    learning_rate: float = option(2e-3, 1e-5, 2e-2, "AdamW's step size, constant through the run: LoRA takes "
                                                    "much larger rates than full fine-tuning (1e-4 to 3e-3)", 1e-5)
    steps: int = option(60, 1, 2000, "optimizer steps; each reads one batch of training examples", 1)
    batch_size: int = option(4, 1, 16, "examples per step: a larger batch is a smoother loss and a slower step", 1)
    heldout_fraction: float = option(0.15, 0.0, 0.5, "share of the examples kept out of training, to measure "
                                                     "the loss on pairs the model never saw", 0.05)
    max_tokens: int = option(128, 16, 512, "tokens of one example (prompt + response) at most; longer ones are "
                                           "cut at the end of the response", 8)
    eval_every: int = option(10, 1, 200, "steps between two held-out loss measurements", 1)
    threads: int = option(1, 1, _cpus(), "torch threads of the training process: 1 leaves the other core to "
                                         "everyone else on this shared machine; 2 is about 1.8x faster", 1)
    seed: int = shared("seed", 0)
    target_modules: tuple[str, ...] = field(default=("q_proj", "v_proj"))  # checked against the model's Linear layers


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str


@dataclass(frozen=True)
class Examples:
    """Prompt/response pairs and where they came from."""

    rows: tuple[Example, ...]
    source: str  # "bundled: pirate" or the uploaded file's name
    notes: tuple[str, ...] = ()  # rows that were left out, and why

    @property
    def digest(self) -> str:
        """sha256 of the pairs as the run stores them (examples.jsonl): the data hash of a manifest."""
        return hashlib.sha256(_jsonl(self.rows).encode("utf-8")).hexdigest()


def _jsonl(rows: Sequence[Example]) -> str:
    return "".join(json.dumps({"prompt": r.prompt, "response": r.response}, ensure_ascii=False) + "\n" for r in rows)


# --- data --------------------------------------------------------------------------------------


def bundled_examples() -> Examples:
    """The bundled pairs: general questions answered in a pirate's voice ("Ahoy, matey! ... Arr!")."""
    ex = parse_examples(EXAMPLES_FILE.read_bytes(), EXAMPLES_FILE.name)
    return dataclasses.replace(ex, source=f"bundled: {EXAMPLES_NAME} ({len(ex.rows)} pairs)")


def _pick(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    low = {c.strip().lower(): c for c in columns if isinstance(c, str)}
    return next((low[w] for w in wanted if w in low), None)


def _column_error(name: str, columns: Sequence[str]) -> InputError:
    shown = ", ".join(repr(c) for c in list(columns)[:12]) or "none"
    return InputError(f"{name} needs a prompt column and a response column; it has {shown}. Name them 'prompt' "
                      f"and 'response' (also accepted: {', '.join(PROMPT_COLUMNS[1:])} / "
                      f"{', '.join(RESPONSE_COLUMNS[1:])}).")


def parse_examples(data: bytes, filename: str) -> Examples:
    """Pairs from an uploaded CSV or JSONL file (read by playground.uploads.read_text), or an InputError
    that names the file, the row and what to do. Rows with an empty prompt or response are left out
    and said; a file with fewer than two usable rows is refused."""
    import csv
    import io

    from playground.limits import UPLOAD_COLUMNS
    from playground.uploads import read_text

    name = filename or "the file"
    text = read_text(data, name, what="a CSV or JSONL file of prompt/response pairs")
    lower = name.lower()
    records: list[tuple[int, Any, Any]] = []
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        cols: list[str] | None = None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{name}, line {n:,}, is not JSON ({exc.msg}). Each line must be one object like "
                                 '{"prompt": "...", "response": "..."}.') from exc
            if not isinstance(obj, dict):
                raise InputError(f"{name}, line {n:,}, is a JSON {type(obj).__name__}, not an object with "
                                 "'prompt' and 'response'.")
            if cols is None:
                cols = list(obj)
                p, r = _pick(cols, PROMPT_COLUMNS), _pick(cols, RESPONSE_COLUMNS)
                if p is None or r is None:
                    raise _column_error(name, cols)
            records.append((n, obj.get(p), obj.get(r)))
            MAX_EXAMPLES.check(len(records), name, "Keep a smaller sample of them.")
    elif lower.endswith((".csv", ".tsv")):
        delim = "\t" if lower.endswith(".tsv") else ","
        try:
            reader = csv.reader(io.StringIO(text), delimiter=delim)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise InputError(f"{name} has no header row: the first line must name the columns, "
                                 "e.g. prompt,response.")
            UPLOAD_COLUMNS.check(len(header), name)
            p, r = _pick(header, PROMPT_COLUMNS), _pick(header, RESPONSE_COLUMNS)
            if p is None or r is None:
                raise _column_error(name, header)
            pi, ri = header.index(p), header.index(r)
            for n, row in enumerate(reader, 2):
                if not any(c.strip() for c in row):
                    continue
                records.append((n, row[pi] if pi < len(row) else "", row[ri] if ri < len(row) else ""))
                MAX_EXAMPLES.check(len(records), name, "Keep a smaller sample of them.")
        except csv.Error as exc:
            raise InputError(f"{name} is not a readable CSV file: {exc}.") from exc
    else:
        raise InputError(f"{name} is neither CSV nor JSONL: upload a .csv (columns prompt,response) or a .jsonl "
                         'file (one {"prompt": ..., "response": ...} per line).')
    rows, notes, empty = [], [], []
    for n, prompt, response in records:
        prompt = "" if prompt is None else str(prompt) if not isinstance(prompt, str) else prompt
        response = "" if response is None else str(response) if not isinstance(response, str) else response
        if not prompt.strip() or not response.strip():
            empty.append(n)
            continue
        EXAMPLE_CHARS.check(max(len(prompt), len(response)), f"{name}, line {n:,}")
        rows.append(Example(prompt.strip(), response.strip()))
    if empty:
        shown = ", ".join(f"{n:,}" for n in empty[:8]) + (" …" if len(empty) > 8 else "")
        notes.append(f"{len(empty):,} row(s) with an empty prompt or response were left out (line {shown}).")
    if len(rows) < MIN_EXAMPLES:
        raise InputError(f"{name} has {len(rows)} usable prompt/response pair(s); a training needs at least "
                         f"{MIN_EXAMPLES} (a few dozen show an effect)." + (" " + notes[0] if notes else ""))
    return Examples(tuple(rows), name, tuple(notes))


def split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of n examples: a seeded shuffle; at least one training example."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = min(int(round(n * fraction)), n - 1)
    return sorted(order[k:]), sorted(order[:k])


# --- the model's side ---------------------------------------------------------------------------


def linear_modules(model) -> tuple[str, ...]:
    """The names LoRA can target: the Linear layers inside the decoder blocks (lm_head and the
    embeddings excluded), by their last name (``q_proj``...), in the order the model holds them."""
    import torch

    seen: dict[str, None] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}" and "lm_head" not in name:
            seen.setdefault(name.rsplit(".", 1)[-1], None)
    return tuple(seen)


def linear_modules_of(base_id: str) -> tuple[str, ...]:
    """`linear_modules` read from the safetensors headers of a base (no weights loaded): the 2-D
    ``.weight`` tensors inside ``.layers.``, by their last module name."""
    from safetensors import safe_open

    from playground.loading import prepare

    seen: dict[str, None] = {}
    for path in sorted(prepare(base_id).glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():
                if ".layers." in key and key.endswith(".weight") and len(fh.get_slice(key).get_shape()) == 2:
                    seen.setdefault(key.rsplit(".", 2)[-2], None)
    order = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    return tuple(sorted(seen, key=lambda n: (order.index(n) if n in order else len(order), n)))


def prompt_text(tokenizer, prompt: str) -> str:
    """What the model reads before the response: the chat template's user turn and assistant header
    (SmolLM2), or the prompt and a newline for a model without one (Gemma 3 base)."""
    from playground.generate import format_prompt, templated

    return format_prompt(tokenizer, prompt) if templated(tokenizer) else prompt + "\n"


@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]
    prompt_len: int  # tokens of the prompt part (not trained on)


def encode(tokenizer, ex: Example, max_tokens: int) -> Encoded:
    """Token ids of prompt + response + end of turn, cut at `max_tokens`; the loss counts the response only.

    When the whole does not fit, a prompt longer than half of `max_tokens` keeps its last half (the end of
    the question and the assistant's header, which the response follows), and the response is cut at the end.
    """
    from playground.generate import templated

    tpl = templated(tokenizer)
    p = tokenizer(prompt_text(tokenizer, ex.prompt), add_special_tokens=not tpl).input_ids
    r = tokenizer(ex.response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    p = p[-(max_tokens // 2):] if len(p) > max_tokens // 2 and len(p) + len(r) > max_tokens else p
    ids = (p + r)[:max_tokens]
    return Encoded(tuple(ids), len(p))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The training examples of step `step` (from 1): drawn without replacement from a generator seeded by
    (seed, step), so a resumed run reads exactly the batches an unbroken one would."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randperm(n, generator=g)[: min(batch_size, n)].tolist()


def collate(encoded: Sequence[Encoded], pad_id: int):
    """(input_ids, attention_mask, labels), each (B, T); padding on the right, labels -100 outside responses."""
    import torch

    t = max(len(e.ids) for e in encoded)
    ids = torch.full((len(encoded), t), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(encoded), t), dtype=torch.long)  # (B, T)
    labels = torch.full((len(encoded), t), -100, dtype=torch.long)  # (B, T)
    for i, e in enumerate(encoded):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        mask[i, :n] = 1
        labels[i, e.prompt_len:n] = torch.tensor(e.ids[e.prompt_len:])
    return ids, mask, labels


# --- estimates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Time and memory of a run before it starts, and how they were worked out."""

    seconds: float
    memory_bytes: int
    tokens: int  # tokens the run reads (padded batches), training steps only
    trainable: int  # numbers LoRA trains
    how: str


def _config(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    return cfg.get("text_config", cfg)


def lora_parameters(cfg: dict, rank: int, targets: Sequence[str]) -> int:
    """How many numbers LoRA trains: rank x (in + out) per adapted layer, from the config's shapes."""
    h, inter = int(cfg["hidden_size"]), int(cfg["intermediate_size"])
    heads, kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    hd = int(cfg.get("head_dim") or h // heads)
    shapes = {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd), "o_proj": (heads * hd, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    return int(cfg["num_hidden_layers"]) * sum(rank * sum(shapes.get(t, (h, h))) for t in targets)


def estimate(base_id: str, settings: LoraSettings, examples: Examples, tokenizer) -> Estimate:
    """A formula calibrated by measurement (bench/bench_finetune.py): FLOPs of a LoRA step are about
    4 x parameters x tokens (the forward pass, and a backward pass that computes input gradients but no
    gradients of frozen weights), at `GFLOPS_PER_THREAD` per torch thread; memory is the fp32 weights,
    the activations kept for the backward pass and the logits. The tokens are the padded batches the run
    will really read (the batches are known in advance)."""
    from playground.loading import prepare

    cfg = _config(prepare(base_id))
    train_idx, _ = split(len(examples.rows), settings.heldout_fraction, settings.seed)
    enc = [encode(tokenizer, examples.rows[i], settings.max_tokens) for i in train_idx]
    tokens, longest = 0, 0
    for s in range(1, settings.steps + 1):
        b = batch_indices(len(enc), settings.batch_size, s, settings.seed)
        t = max(len(enc[i].ids) for i in b)
        tokens += t * len(b)
        longest = max(longest, t * len(b))
    h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
    params = _weights(prepare(base_id))
    trainable = lora_parameters(cfg, settings.rank, settings.target_modules)
    flops = 4 * params * tokens
    threads = min(settings.threads, _cpus())
    seconds = flops / (GFLOPS_PER_THREAD * 1e9 * threads)
    memory = (PROCESS_BYTES + params * 4 + trainable * 4 * 4
              + ACTIVATION_FACTOR * layers * h * longest * 4 + LOGITS_COPIES * longest * vocab * 4)
    how = (f"a formula calibrated on this machine (bench/bench_finetune.py): 4 × {params / 1e6:.0f} M parameters × "
           f"{tokens:,} tokens at {GFLOPS_PER_THREAD:.0f} GFLOP/s per thread × {threads} thread(s); memory = weights "
           f"+ activations and logits of the largest batch ({longest:,} tokens). Once the run starts, its own "
           "measured speed replaces this.")
    return Estimate(seconds, int(memory), tokens, trainable, how)


def _weights(folder: Path) -> int:
    from playground.loading import _count_parameters

    return _count_parameters(folder)[0]


# --- runs on disk -------------------------------------------------------------------------------


def runs_root() -> Path:
    root = data_root() / "finetune"
    root.mkdir(parents=True, exist_ok=True)
    return root


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name.strip()):
        raise InputError(f"Run name {name!r} is not usable: use 1-40 lower-case letters, digits, '-' or '_', "
                         "starting with a letter or digit (it becomes the model id 'lora:<name>').")
    return name.strip()


def run_folder(name: str) -> Path:
    return runs_root() / check_name(name)


def free_name(stem: str = EXAMPLES_NAME) -> str:
    """`stem`, or `stem-2`, `stem-3`... : the first name no run has."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")[:32] or "run"
    names = {p.name for p in runs_root().iterdir()}
    if stem not in names:
        return stem
    return next(f"{stem}-{i}" for i in range(2, 10_000) if f"{stem}-{i}" not in names)


def list_runs() -> list[str]:
    """Names of the runs on disk, newest first."""
    found = [p for p in runs_root().iterdir() if p.is_dir() and NAME.match(p.name) and (p / "run.json").is_file()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def create_run(name: str, base_id: str, settings: LoraSettings, examples: Examples, replace: bool = False) -> Path:
    """Write a run's folder (run.json, examples.jsonl); WouldReplaceError if the name is taken."""
    validate(settings)
    name = check_name(name)
    if base_id not in BASES:
        raise InputError(f"{base_id!r} cannot be fine-tuned here; the bases are {', '.join(BASES)}.")
    if not settings.target_modules:
        raise InputError("Pick at least one layer to adapt (target modules), e.g. q_proj and v_proj.")
    folder = run_folder(name)
    if folder.exists():
        if not replace:
            raise WouldReplaceError(f"A run named {name!r} exists already. Resume it, or pick another name.")
        shutil.rmtree(folder)
    train_idx, held_idx = split(len(examples.rows), settings.heldout_fraction, settings.seed)
    tmp = folder.with_name(f".{name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "examples.jsonl").write_text(_jsonl(examples.rows), encoding="utf-8")
    (tmp / "run.json").write_text(json.dumps({
        "name": name, "base": base_id, "settings": _settings_dict(settings), "data_sha256": examples.digest,
        "data_source": examples.source, "examples": len(examples.rows), "train": train_idx, "heldout": held_idx,
        "created": time.time()}, indent=1))
    os.replace(tmp, folder)
    return folder


def _settings_dict(s: LoraSettings) -> dict:
    d = dataclasses.asdict(s)
    d["target_modules"] = list(s.target_modules)
    return d


def _settings_of(d: dict) -> LoraSettings:
    d = dict(d)
    d["target_modules"] = tuple(d.get("target_modules", ()))
    known = {f.name for f in dataclasses.fields(LoraSettings)}
    return LoraSettings(**{k: v for k, v in d.items() if k in known})


def read_run(folder: Path) -> dict:
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise UnknownModelError(f"The run in {folder} cannot be read ({exc}); delete the folder and train again.") from exc


def read_examples(folder: Path) -> list[Example]:
    lines = (folder / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    return [Example(**json.loads(x)) for x in lines if x.strip()]


def checkpoint_folder(folder: Path) -> Path | None:
    """The run's complete checkpoint (its marker matches every file's size), or None."""
    for cand in (folder / "checkpoint", folder / "checkpoint.old"):
        marker = cand / MARKER
        try:
            sizes = json.loads(marker.read_text())["files"]
        except (OSError, ValueError, KeyError):
            continue
        if all((cand / n).is_file() and (cand / n).stat().st_size == z for n, z in sizes.items()):
            return cand
    return None


_MANIFESTS: dict[Path, tuple[int, dict]] = {}  # checkpoint/manifest.json -> (its mtime, its content)


def manifest(folder: Path) -> dict | None:
    """The run's last complete checkpoint's manifest, or None. Read again only when the file changes
    (pages ask for the catalogue entries on every rerun)."""
    ck = checkpoint_folder(folder)
    if ck is None:
        return None
    path = ck / "manifest.json"
    mtime = path.stat().st_mtime_ns
    held = _MANIFESTS.get(path)
    if held is None or held[0] != mtime:
        held = _MANIFESTS[path] = (mtime, json.loads(path.read_text()))
    return held[1]


# --- training -----------------------------------------------------------------------------------


@dataclass
class Trained:
    """What `train` leaves: the peft model (in this process) and its history."""

    model: Any  # peft.PeftModel, train mode off
    tokenizer: Any
    step: int
    train_loss: list[tuple[int, float]]
    heldout_loss: list[tuple[int, float]]
    stopped: bool


def _load_base(base_id: str, attn: str = "sdpa"):
    """A fresh copy of the base's fp32 weights (never the shared cached model) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from playground.loading import load_tokenizer, prepare

    folder = prepare(base_id)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn,
                                                 use_safetensors=True, trust_remote_code=False)
    return model, load_tokenizer(base_id)


def _save_optimizer(opt, path: Path) -> None:
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(groups)})


def _load_optimizer(opt, path: Path) -> None:
    from safetensors import safe_open

    state: dict[int, dict] = {}
    with safe_open(str(path), "pt") as fh:
        groups = json.loads(fh.metadata()["param_groups"])
        for key in fh.keys():
            i, k = key.split(".", 1)
            state.setdefault(int(i), {})[k] = fh.get_tensor(key)
    opt.load_state_dict({"state": state, "param_groups": groups})


def _save_checkpoint(folder: Path, model, opt, info: dict) -> None:
    """Adapter + optimizer + manifest into checkpoint/, whole or not at all."""
    final = folder / "checkpoint"
    tmp = folder / f"checkpoint.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    _save_optimizer(opt, tmp / "optimizer.safetensors")
    (tmp / "manifest.json").write_text(json.dumps(info, indent=1))
    sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / MARKER).write_text(json.dumps({"files": sizes, "written": time.time()}))
    old = folder / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _mean_loss(model, enc: Sequence[Encoded], pad_id: int, batch: int) -> float:
    """The loss over every response token of `enc` (token-weighted), without gradients."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(enc), batch):
            ids, mask, labels = collate(enc[i:i + batch], pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
            target = labels[:, 1:]  # (B, T-1)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((target != -100).sum())
    return total / max(count, 1)


def train(folder: Path, on_event: Event | None = None, should_stop: Callable[[int], bool] | None = None,
          stop_at: int | None = None) -> Trained:
    """Train (or resume) the run in `folder` in this process, to its steps or until `should_stop(step)`
    (or `stop_at`) says stop; checkpoint every CHECKPOINT_EVERY steps, at a stop and at the end.

    `on_event` gets {"type": "step", "step", "loss", "tokens", "seconds"} after each step and
    {"type": "eval", "step", "loss"} after each held-out measurement (and at step 0 of a new run).
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    emit = on_event or (lambda e: None)
    run = read_run(folder)
    settings = validate(_settings_of(run["settings"]))
    rows = read_examples(folder)
    model, tok = _load_base(run["base"])
    for p in model.parameters():
        p.requires_grad_(False)
    known = linear_modules(model)
    bad = [t for t in settings.target_modules if t not in known]
    if bad:
        raise InputError(f"{run['base']} has no Linear layers named {', '.join(bad)}; its are {', '.join(known)}.")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc_train = [encode(tok, rows[i], settings.max_tokens) for i in run["train"]]
    enc_held = [encode(tok, rows[i], settings.max_tokens) for i in run["heldout"]]
    ck = checkpoint_folder(folder)
    if ck is not None:
        info = json.loads((ck / "manifest.json").read_text())
        model = PeftModel.from_pretrained(model, str(ck), is_trainable=True)
        step, history, held = int(info["step"]), [tuple(x) for x in info["train_loss"]], [tuple(x) for x in info["heldout_loss"]]
        seconds, tokens = float(info.get("seconds", 0.0)), int(info.get("tokens", 0))
    else:
        torch.manual_seed(settings.seed)  # LoRA's A matrices start random (B at zero: the model starts as the base)
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=list(settings.target_modules),
                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        step, history, held, seconds, tokens = 0, [], [], 0.0, 0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    if ck is not None:
        _load_optimizer(opt, ck / "optimizer.safetensors")
    if step == 0 and enc_held:
        model.eval()
        held.append((0, _mean_loss(model, enc_held, pad_id, settings.batch_size)))
        emit({"type": "eval", "step": 0, "loss": held[-1][1]})

    def info_now(state: str) -> dict:
        return {"name": run["name"], "base": run["base"], "settings": run["settings"], "data_sha256": run["data_sha256"],
                "data_source": run["data_source"], "examples": run["examples"], "step": step,
                "steps": settings.steps, "train_loss": history, "heldout_loss": held, "seconds": seconds,
                "tokens": tokens, "trainable": sum(p.numel() for p in params), "state": state, "saved": time.time()}

    stopped = False
    while step < settings.steps:
        if (should_stop and should_stop(step)) or (stop_at is not None and step >= stop_at):
            stopped = True
            break
        model.train()
        t0 = time.perf_counter()
        batch = [enc_train[i] for i in batch_indices(len(enc_train), settings.batch_size, step + 1, settings.seed)]
        ids, mask, labels = collate(batch, pad_id)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        dt = time.perf_counter() - t0
        seconds += dt
        tokens += int(ids.numel())
        history.append((step, out.loss.item()))
        emit({"type": "step", "step": step, "loss": history[-1][1], "tokens": int(ids.numel()), "seconds": dt})
        if enc_held and (step % settings.eval_every == 0 or step == settings.steps):
            model.eval()
            held.append((step, _mean_loss(model, enc_held, pad_id, settings.batch_size)))
            emit({"type": "eval", "step": step, "loss": held[-1][1]})
        if step % CHECKPOINT_EVERY == 0 and step < settings.steps:
            _save_checkpoint(folder, model, opt, info_now("running"))
    model.eval()
    _save_checkpoint(folder, model, opt, info_now("stopped" if stopped else "done"))
    return Trained(model, tok, step, history, held, stopped)


# --- the background process and the registry ---------------------------------------------------


_PROCS: dict[str, subprocess.Popen] = {}  # run name -> its training process, for this app process
_PROCS_LOCK = threading.Lock()


def _lock_path() -> Path:
    return runs_root() / ".training.lock"


@contextlib.contextmanager
def _machine_lock(block: bool = False):
    """The one-training-per-machine lock (a file lock, so two app processes see each other's training)."""
    fh = open(_lock_path(), "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        fh.close()
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def running() -> str | None:
    """The name of the run training now in this app process, or "another process" when another one on
    this machine holds the lock, or None."""
    with _PROCS_LOCK:
        for name, proc in _PROCS.items():
            if proc.poll() is None:
                return name
    with _machine_lock() as free:
        return None if free else "another app process"


def start(name: str, base_id: str | None = None, settings: LoraSettings | None = None,
          examples: Examples | None = None, resume: bool = False) -> Path:
    """Start a run (or resume one) in a child process; TrainingBusyError while another one trains."""
    busy = running()
    if busy is not None:
        what = f"the run {busy!r}" if busy != "another app process" else "a run started by another app process"
        raise TrainingBusyError(f"A training is running already ({what}); this machine trains one at a time, so "
                                "that its memory and CPU stay within what the page states. Wait for it to finish "
                                "or stop it, then start again.")
    if resume:
        folder = run_folder(name)
        if not (folder / "run.json").is_file():
            raise InputError(f"There is no run named {name!r} to resume.")
        m = manifest(folder)
        if m is not None and m["step"] >= m["steps"]:
            raise InputError(f"The run {name!r} has finished its {m['steps']} steps; start a new run to train more.")
    else:
        folder = create_run(name, base_id or DEFAULT_BASE, settings or LoraSettings(), examples or bundled_examples())
    (folder / "stop").unlink(missing_ok=True)
    root = Path(__file__).resolve().parent.parent
    log = open(folder / "worker.log", "ab")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with _PROCS_LOCK:
        proc = subprocess.Popen([sys.executable, "-m", "playground.finetune", str(folder)], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        _PROCS[folder.name] = proc
    log.close()
    (folder / "progress.jsonl").touch()
    return folder


def stop(name: str) -> None:
    """Ask a run to stop: it checkpoints at the end of the step under way and ends."""
    (run_folder(name) / "stop").touch()


def wait(name: str, timeout: float = 600.0) -> int | None:
    """Wait for a run's process to end (tests, the bench); its exit code, or None if it is not ours."""
    with _PROCS_LOCK:
        proc = _PROCS.get(name)
    return None if proc is None else proc.wait(timeout)


@dataclass(frozen=True)
class RunStatus:
    """What a page shows of a run, read from its folder (and its process, if this app started it)."""

    name: str
    base: str
    state: str  # "starting" | "running" | "stopping" | "stopped" | "done" | "failed"
    step: int
    steps: int
    saved_step: int  # the step of its last checkpoint (0: none yet)
    train_loss: tuple[tuple[int, float], ...]
    heldout_loss: tuple[tuple[int, float], ...]
    seconds: float  # training time so far (the steps themselves)
    tokens: int
    peak_bytes: int  # the training process's peak resident memory, as measured (0 until it reports)
    message: str
    settings: LoraSettings
    data_source: str
    data_sha256: str

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "stopping")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.step == 0 or self.seconds <= 0 or not self.active:
            return None
        return (self.steps - self.step) * self.seconds / self.step

    @property
    def model_id(self) -> str:
        return LORA_PREFIX + self.name


def status(name: str) -> RunStatus:
    folder = run_folder(name)
    run = read_run(folder)
    settings = _settings_of(run["settings"])
    m = manifest(folder) or {}
    events = []
    try:
        for line in (folder / "progress.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    except OSError:
        pass
    train = [(e["step"], e["loss"]) for e in events if e.get("type") == "step"]
    held = [(e["step"], e["loss"]) for e in events if e.get("type") == "eval"]
    if not train and m:  # no progress file (a copied folder): the checkpoint's history
        train, held = [tuple(x) for x in m["train_loss"]], [tuple(x) for x in m["heldout_loss"]]
    finals = [e for e in events if e.get("type") == "status"]
    peak = max((int(e.get("peak_bytes", 0)) for e in events), default=0)
    timed = [e for e in events if e.get("type") in ("step", "resumed")]
    seconds = sum(e.get("seconds", 0.0) for e in timed) if timed else float(m.get("seconds", 0.0))
    tokens = sum(e.get("tokens", 0) for e in timed) if timed else int(m.get("tokens", 0))
    with _PROCS_LOCK:
        proc = _PROCS.get(name)
    code = proc.poll() if proc is not None else None
    step = train[-1][0] if train else int(m.get("step", 0))
    message = finals[-1].get("message", "") if finals else ""
    if proc is not None and code is None:
        state = "stopping" if (folder / "stop").exists() else ("running" if train or held else "starting")
    elif finals and finals[-1].get("state") in ("done", "stopped", "failed"):
        state = finals[-1]["state"]
    elif proc is not None:
        state, message = "failed", f"The training process ended with code {code} before it finished; see {folder / 'worker.log'}."
    elif _trains_elsewhere(folder):  # started by another app process on this machine
        state, message = "running", "Training in another app process on this machine; this page shows its progress."
    else:  # a run from an earlier app process: what its checkpoint says
        state = {"done": "done"}.get(m.get("state", ""), "stopped")
        step = int(m.get("step", step))
    return RunStatus(name, run["base"], state, step, settings.steps, int(m.get("step", 0)), tuple(train), tuple(held),
                     seconds, tokens, peak, message, settings, run.get("data_source", ""), run.get("data_sha256", ""))


def _trains_elsewhere(folder: Path) -> bool:
    """Whether another process on this machine is training this run: the machine lock is held and the
    run's progress file moved in the last five minutes."""
    try:
        recent = time.time() - (folder / "progress.jsonl").stat().st_mtime < 300
    except OSError:
        return False
    if not recent:
        return False
    with _machine_lock() as free:
        return not free


def _worker(folder: Path) -> int:
    """The child process: nice, threads, the machine lock, then `train` with progress into progress.jsonl."""
    import resource

    import torch

    os.nice(NICE)
    run = read_run(folder)
    settings = _settings_of(run["settings"])
    torch.set_num_threads(max(1, min(settings.threads, _cpus())))
    progress = folder / "progress.jsonl"

    def write(event: dict) -> None:
        event["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with open(progress, "a") as fh:
            fh.write(json.dumps(event) + "\n")

    with _machine_lock() as free:
        if not free:
            write({"type": "status", "state": "failed", "message": "Another training is running on this machine; "
                   "one runs at a time. Start again when it has finished."})
            return 1
        m = manifest(folder)
        lines = []  # a resumed run starts its progress from its checkpoint (steps after it were not kept)
        if m is not None:
            lines = [{"type": "resumed", "step": m["step"], "seconds": m.get("seconds", 0.0), "tokens": m.get("tokens", 0)}]
            lines += [{"type": "step", "step": s, "loss": v, "tokens": 0, "seconds": 0.0} for s, v in m["train_loss"]]
            lines += [{"type": "eval", "step": s, "loss": v} for s, v in m["heldout_loss"]]
        progress.write_text("".join(json.dumps(x) + "\n" for x in lines))
        try:
            parent = os.getppid()  # the app process: if it ends, stop at the next step (resumable), not orphaned
            result = train(folder, write, should_stop=lambda step: (folder / "stop").exists() or os.getppid() != parent)
        except Exception as exc:  # noqa: BLE001 - the page shows it
            from playground.errors import describe

            write({"type": "status", "state": "failed", "message": describe(exc)})
            raise
        write({"type": "status", "state": "stopped" if result.stopped else "done",
               "message": f"{'Stopped' if result.stopped else 'Finished'} at step {result.step}; the adapter is "
                          f"saved in {folder / 'checkpoint'}."})
        (folder / "stop").unlink(missing_ok=True)
    return 0


# --- the tuned model as a catalogue entry ------------------------------------------------------


def tuned_spec(model_id: str) -> ModelSpec:
    """The catalogue entry ``lora:<name>``: the base's entry with its own id, name and origin."""
    name = model_id.strip()[len(LORA_PREFIX):]
    if not NAME.match(name):
        raise UnknownModelError(f"Unknown model {model_id!r}: a fine-tuned entry is 'lora:<run name>' (lower-case "
                                "letters, digits, '-' or '_'), e.g. 'lora:pirate'.")
    folder = runs_root() / name
    m = manifest(folder) if folder.is_dir() else None
    if m is None:
        raise UnknownModelError(f"There is no saved fine-tuned model named {name!r} (no checkpoint in {folder}). "
                                "Train one on the Fine-tune page first.")
    base = BUNDLED[m["base"]]
    s = m["settings"]
    return dataclasses.replace(
        base, id=f"{LORA_PREFIX}{name}", name=f"{base.name} + LoRA {name}", base_id=base.id, adapter=name,
        description=f"{base.name} fine-tuned with LoRA (rank {s['rank']}, alpha {s['alpha']}, "
                    f"{', '.join(s['target_modules'])}) for {m['step']} steps on {m['data_source']}.",
        origin=f"LoRA adapter in {folder / 'checkpoint'} (data sha256 {m['data_sha256'][:12]}…), merged into the "
               f"de-quantized {base.name} weights")


def tuned_entries() -> list[ModelSpec]:
    """Every saved run as a catalogue entry (runs with no checkpoint yet are left out)."""
    out = []
    for name in list_runs():
        with contextlib.suppress(PlaygroundError, OSError, ValueError, KeyError):
            out.append(tuned_spec(LORA_PREFIX + name))
    return out


_LOADED: dict[str, float] = {}  # model id -> saved time of the checkpoint it was loaded from


def load_tuned(spec: ModelSpec, progress=None):
    """A LoadedModel of a fine-tuned entry: a fresh copy of the base with the adapter merged in (so it runs
    at the base's speed and every page reads it as a plain transformers model)."""
    from peft import PeftModel

    from playground import attend
    from playground.loading import LoadedModel, _memory_of, prepare

    report = progress or (lambda f, m: None)
    start_t = time.perf_counter()
    folder = runs_root() / spec.adapter
    ck = checkpoint_folder(folder)
    if ck is None:
        raise UnknownModelError(f"The fine-tuned model {spec.id} has no saved checkpoint; train it first.")
    report(0.5, f"loading {spec.base_id} and merging the adapter of {spec.adapter}")
    try:
        model, tok = _load_base(spec.base_id, attn=attend.register())
        model = PeftModel.from_pretrained(model, str(ck)).merge_and_unload()
    except PlaygroundError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CapabilityError(f"The adapter of {spec.id} could not be loaded: {type(exc).__name__}: {exc}") from exc
    model.eval()
    _LOADED[spec.id] = json.loads((ck / "manifest.json").read_text()).get("saved", 0.0)
    report(1.0, "ready")
    return LoadedModel(spec, model, tok, time.perf_counter() - start_t, _memory_of(model), prepare(spec.base_id))


def stale(model_id: str) -> bool:
    """Whether a loaded tuned entry is older than its run's checkpoint (a resumed run saved again)."""
    if model_id not in _LOADED:
        return False
    try:
        m = manifest(runs_root() / model_id[len(LORA_PREFIX):])
    except (OSError, ValueError):
        return False
    return m is not None and m.get("saved", 0.0) != _LOADED[model_id]


# --- before / after ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BeforeAfter:
    prompt: str
    before: str
    after: str


def before_after(base, tuned, prompts: Sequence[str], max_new_tokens: int = 40) -> list[BeforeAfter]:
    """Greedy answers of the base and of the tuned model to the same prompts, in the training format."""
    from playground.generate import GenerationSettings, generate

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    out = []
    for p in prompts:
        text = p if getattr(base.tokenizer, "chat_template", None) else p + "\n"
        out.append(BeforeAfter(p, generate(base, text, settings).text, generate(tuned, text, settings).text))
    return out


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))

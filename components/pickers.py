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


def label(model_id: str) -> str:
    """'SmolLM2 135M Instruct · int8 (bundled)'; an unknown id is shown as it is."""
    try:
        spec = get_model(model_id)
    except PlaygroundError:
        return model_id
    return f"{spec.label} ({'bundled' if spec.source == 'bundled' else 'Hub'})"


def default_generator() -> str:
    """The sidebar's pick if it can generate, else the bundled chat model."""
    picked = state.current_model()
    try:
        return picked if get_model(picked).can_generate else DEFAULT_CHAT_MODEL
    except PlaygroundError:
        return DEFAULT_CHAT_MODEL

"""Model choices for pickers, in one place: catalogue ids by capability, labels, defaults.

A page lists the entries whose engine can do what it shows (`for_need`) and says in one line why
the others are not there (`left_out`): the Attention page lists transformers entries only, the
Next token page every entry with a distribution, generation pages every entry that generates.
"""

from __future__ import annotations

from components import state
from playground.errors import PlaygroundError
from playground.registry import DEFAULT_CHAT_MODEL, get_model, list_models


def catalogue(variants: bool = True, engines: bool = False) -> list:
    """Every catalogue entry; a broken Hub cache never breaks a page (bundled models still listed).

    engines=False keeps the transformers entries only; True adds the entries on llama.cpp (the
    bundled GGUF files, downloaded Hub GGUF files) and the models of the endpoints a person added.
    """
    try:
        specs = list_models(include_variants=variants)
    except Exception:  # noqa: BLE001
        specs = list_models(include_variants=variants, include_cached_hub=False)
    if not engines:
        return [s for s in specs if s.engine == "transformers"]
    return specs + [s for s in other_engine_entries() if s.id not in {x.id for x in specs}]


def other_engine_entries() -> list:
    """Entries on other engines that are ready to use: downloaded Hub GGUF files and endpoint models."""
    out = []
    for finder in (_hub_gguf_entries, _endpoint_entries):
        try:
            out.extend(finder())
        except Exception:  # noqa: BLE001 - a broken cache or endpoint store never breaks a page
            continue
    return out


def _hub_gguf_entries() -> list:
    try:
        from playground.engines import llamacpp
    except ImportError:
        return []
    finder = getattr(llamacpp, "cached_gguf_entries", None)
    return list(finder()) if finder else []


def _endpoint_entries() -> list:
    """The models this session listed on its endpoints (asking a server on every rerun would be slow)."""
    from components import endpoints

    return endpoints.listed_entries()


def usable_generator(model_id: str) -> bool:
    """A catalogue id that generates and can be reached now: a Hub id is checked when it loads, a
    model on an endpoint needs that endpoint to be added (its models need not be listed yet)."""
    try:
        spec = get_model(model_id)
    except PlaygroundError:
        return False
    if not spec.can_generate:
        return False
    if spec.engine == "remote":
        from playground import endpoints

        try:
            endpoints.get_endpoint(spec.endpoint)
        except PlaygroundError:
            return False
    return True


def generators(variants: bool = True) -> list[str]:
    """Ids of the models that can generate text, on every engine."""
    return [s.id for s in catalogue(variants, engines=True) if s.can_generate]


def for_need(need: str, variants: bool = True) -> list[str]:
    """Ids of the entries whose engine can do `need` (playground.engines.Need)."""
    return [s.id for s in catalogue(variants, engines=True) if s.capabilities.can(need)]


def left_out(need: str, variants: bool = True) -> str | None:
    """One line on the entries a page does not list because their engine cannot do `need`."""
    from playground.engines import why_not

    missing = [s for s in catalogue(variants, engines=True) if s.can_generate and not s.capabilities.can(need)]
    if not missing:
        return None
    names = ", ".join(sorted({s.label for s in missing})[:4]) + (" …" if len(missing) > 4 else "")
    return f"Not listed: {names}. {why_not(missing[0], need)}"


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
    where = {"bundled": "bundled", "hub": "Hub", "endpoint": "endpoint"}[spec.source]
    return f"{spec.label} ({where}{', decoder' if role and spec.can_generate else ', encoder' if role else ''})"


def default_generator() -> str:
    """The sidebar's pick if it can generate, else the bundled chat model."""
    picked = state.current_model()
    try:
        return picked if get_model(picked).can_generate else DEFAULT_CHAT_MODEL
    except PlaygroundError:
        return DEFAULT_CHAT_MODEL

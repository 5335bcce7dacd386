"""One attention implementation that is SDPA when nobody looks and exact eager when somebody does.

Generation does not show attention, and eager attention (a full softmax matrix per layer and
head) is the slowest way to compute it; the Attention page needs the weights themselves, which
only the eager path computes. Loading a causal LM twice would double its memory, and switching a
shared model with `set_attn_implementation` would race with other sessions. So causal LMs load
with ``attn_implementation="playground"``: this module registers that name with transformers'
`AttentionInterface` and `AttentionMaskInterface`, and each forward pass picks, per call, the
model's own eager function (and eager's additive mask) inside `weights_needed()`, and PyTorch's
scaled_dot_product_attention (and its boolean or skipped mask) everywhere else. The choice is a
ContextVar, so it holds for one thread's call only: a generation running in a worker thread at
the same moment keeps SDPA.

    with weights_needed():
        out = model(ids, output_attentions=True)   # exact eager weights, as before

What it leaves out: capturing the weights (playground.passes hooks the attention modules).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar

NAME = "playground"
_eager: ContextVar[bool] = ContextVar("playground_eager_attention", default=False)
_registered = False
CALLS = {"eager": 0, "sdpa": 0}  # attention calls (one per layer per forward) by path, so a test can check which ran


@contextlib.contextmanager
def weights_needed() -> Iterator[None]:
    """Within this block, in this thread, attention runs eager and returns its weights."""
    token = _eager.set(True)
    try:
        yield
    finally:
        _eager.reset(token)


def eager_now() -> bool:
    return _eager.get()


def _attention(module, query, key, value, attention_mask, **kwargs):
    if _eager.get():
        CALLS["eager"] += 1
        # the model's own eager function (Gemma's has soft-capping and its own scaling rules)
        own = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if own is None:
            from transformers.integrations.sdpa_attention import sdpa_attention_forward as own  # pragma: no cover
        return own(module, query, key, value, attention_mask, **kwargs)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    CALLS["sdpa"] += 1
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _mask(*args, **kwargs):
    from transformers.masking_utils import eager_mask, sdpa_mask

    return (eager_mask if _eager.get() else sdpa_mask)(*args, **kwargs)


def register() -> str:
    """Register the implementation once per process; returns its name for `from_pretrained`."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, _attention)
        AttentionMaskInterface.register(NAME, _mask)
        _registered = True
    return NAME

"""The page list, in one place: the router builds navigation from it and Home links to it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (file, title, icon, what it shows). A page is listed only if its file exists: no placeholders.
PAGES = [
    ("views/home.py", "Home", ":material/home:", "What LLM Playground is."),
    ("views/tokens.py", "Tokenization", ":material/text_fields:",
     "See exactly what the model sees: pieces, ids, bytes, special tokens, chat templates, tokenizers side by side."),
    ("views/next_token.py", "Next token", ":material/casino:",
     "The probability of every next token, and how temperature, top-k, top-p and min-p reshape it, step by step."),
    ("views/lens.py", "Logit lens", ":material/layers:",
     "What every layer would predict at every position, and where the model's answer forms."),
    ("views/attention.py", "Attention", ":material/grid_on:",
     "Which tokens each token looks at, layer by layer and head by head."),
    ("views/compare.py", "Compare models", ":material/compare:",
     "The same prompt to two to four models, streamed side by side with speed and memory."),
    ("views/rag.py", "RAG builder", ":material/travel_explore:",
     "Chunk, embed, index in Qdrant, retrieve and answer with citations; compare setups."),
    ("views/prompt_ab.py", "Prompt A/B", ":material/science:",
     "Prompt templates side by side over a set of inputs, with checks, a judge and your votes."),
    ("views/finetune.py", "Fine-tune", ":material/model_training:", "LoRA on a bundled model, live loss curve, before/after; the tuned model joins the catalogue."),
]


def existing() -> list[tuple[Path, str, str, str]]:
    return [(ROOT / p, t, i, d) for p, t, i, d in PAGES if (ROOT / p).is_file()]

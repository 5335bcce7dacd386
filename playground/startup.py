"""Start-up: every heavy library imported once, under one lock, before any page runs.

Eight sessions opening pages at once on a fresh server once made one of them fail with
"ImportError: cannot import name 'AutoTokenizer' from 'transformers'": transformers resolves its
names lazily (`_LazyModule.__getattr__` imports a submodule on first use), and two threads importing
`transformers.models.auto` submodules in different orders can meet Python's import deadlock
detection, which hands one of them a module that is not initialised yet. So the router calls
`warm()` before anything else (app.py, through components/server.py): the first session imports
every library and resolves every lazily imported name the app uses, in one thread, while the others
wait on the lock; later calls return at once. `guarded()` is that lock for the rest of the process'
life: model loading holds it around `from_pretrained`, which imports an architecture's modules
(a Hub model's, say) on its first load.

`IMPORTS` lists what is imported: (module, names to resolve). A library that is not installed (the
llama.cpp bindings, psycopg) is noted in `Warmed.missing`, not an error: the pages that need it say so.

What it leaves out: loading models (components/models.py does that on demand, with progress), and
warming Streamlit itself.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

# (module, attributes resolved on it): every library the app imports lazily, in functions or threads.
IMPORTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ("no_grad", "Generator")),
    ("torch.ao.nn.quantized.dynamic", ("Linear",)),
    ("numpy", ()),
    ("safetensors", ("safe_open",)),
    ("tokenizers", ("Tokenizer",)),
    ("transformers", ("AutoTokenizer", "AutoModelForCausalLM", "AutoModel", "AutoConfig", "CONFIG_MAPPING",
                      "LogitsProcessorList", "StoppingCriteriaList", "AttentionInterface", "PreTrainedTokenizerFast",
                      "LlamaForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "BertModel")),
    ("transformers.masking_utils", ("eager_mask", "sdpa_mask", "AttentionMaskInterface")),
    ("transformers.integrations.sdpa_attention", ("sdpa_attention_forward",)),
    ("transformers.utils.output_capturing", ("OutputRecorder",)),
    ("transformers.modeling_gguf_pytorch_utils", ()),
    ("transformers.models.llama.modeling_llama", ()),
    ("transformers.models.gemma3.modeling_gemma3", ()),
    ("transformers.models.bert.modeling_bert", ()),
    ("sentence_transformers", ("SentenceTransformer",)),
    ("huggingface_hub", ("HfApi",)),
    ("llama_cpp", ("Llama",)),
    ("llama_cpp.llama_cpp", ()),
    ("qdrant_edge", ()),
    ("qdrant_client", ("QdrantClient", "models")),
    ("langchain_core.prompts", ("PromptTemplate", "ChatPromptTemplate")),
    ("langchain_core.prompts.string", ("get_template_variables",)),
    ("langchain_text_splitters", ("RecursiveCharacterTextSplitter",)),
    ("langchain_text_splitters.base", ("Tokenizer", "split_text_on_tokens")),
    ("llama_index.core", ("Document",)),
    ("llama_index.core.node_parser", ("SentenceSplitter", "SemanticSplitterNodeParser")),
    ("llama_index.core.bridge.pydantic", ("PrivateAttr",)),
    ("llama_index.core.base.embeddings.base", ("BaseEmbedding",)),
    ("sklearn.decomposition", ("PCA",)),
    ("sklearn.feature_extraction.text", ("ENGLISH_STOP_WORDS",)),
    ("jinja2.sandbox", ("SandboxedEnvironment",)),
    ("jinja2", ("meta", "nodes", "TemplateSyntaxError")),
    ("re2", ()),
    ("pypdf", ("PdfReader",)),
    ("bs4", ("BeautifulSoup",)),
    ("psutil", ()),
    ("psycopg", ()),
    ("plotly.graph_objects", ("Figure",)),
    ("pandas", ("DataFrame",)),
)

_lock = threading.RLock()
_done: "Warmed | None" = None


@dataclass(frozen=True)
class Warmed:
    seconds: float
    imported: tuple[str, ...]
    missing: tuple[str, ...]  # "module: why" for each that could not be imported


def warm() -> Warmed:
    """Import IMPORTS once (under the lock); every later call returns the first call's report."""
    global _done
    if _done is not None:
        return _done
    with _lock:
        if _done is not None:
            return _done
        start = time.perf_counter()
        imported, missing = [], []
        for name, attrs in IMPORTS:
            try:
                module = importlib.import_module(name)
                for a in attrs:
                    getattr(module, a)
                imported.append(name)
            except Exception as exc:  # noqa: BLE001 - an optional library; its page says what to install
                missing.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        _done = Warmed(time.perf_counter() - start, tuple(imported), tuple(missing))
        return _done


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Hold the start-up lock: for a call that may import modules for the first time (a new architecture)."""
    with _lock:
        yield

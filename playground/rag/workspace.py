"""What the RAG builder keeps between reruns, and the questions a page asks the store before it acts.

- `fingerprint(documents)`: one hash of every document's name and text, so chunks cut from the
  same documents with the same settings are recognised.
- `ChunkMemo`: the chunks of the current documents, per (chunk settings, embedder); a change of
  documents forgets the others. Cutting a large corpus takes seconds: a rerun should not repeat it.
- `IndexState` / `index_state(client, collection, chunks)`: how many of these chunks a collection
  holds, and its points in all. (What indexing would replace, `pipeline.replaced`, is asked by
  `pipeline.index` itself, which refuses it unless told.)
- `available_embedders()`: the bundled sentence embedders, and Hub models in the local cache that
  are sentence-transformers models (a `modules.json` in the snapshot).
- `TEXT_LIMITS`: the most characters each text box of the page accepts.

>>> from playground.rag.documents import Document
>>> a, b = Document("a", "one", "pasted"), Document("a", "two", "pasted")
>>> fingerprint([a]) == fingerprint([a]), fingerprint([a]) == fingerprint([b])
(True, False)

What it leaves out: Streamlit (the page keeps a `ChunkMemo` in its session) and the cutting itself
(playground.rag.chunking).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from playground.rag import store
from playground.rag.chunking import Chunk, ChunkSettings
from playground.rag.documents import Document

TEXT_LIMITS = {  # characters
    "question": 2_000,
    "template": 20_000,
    "paste_name": 200,
    "paste_text": 5_000_000,
    "eval_text": 200_000,
    "setup_name": 80,  # playground.rag.setups.MAX_NAME
    "url": 2_000,
    "api_key": 1_000,
}


def fingerprint(documents: Sequence[Document]) -> str:
    h = hashlib.sha256()
    for d in documents:
        h.update(d.source.encode() + b"\0" + hashlib.sha256(d.text.encode()).digest())
    return h.hexdigest()


@dataclass
class ChunkMemo:
    """Chunks per (documents, settings, embedder), for the current documents only."""

    entries: dict[tuple, list[Chunk]] = field(default_factory=dict)

    def get(self, documents: Sequence[Document], settings: ChunkSettings, embedder_id: str,
            make: Callable[[], list[Chunk]]) -> list[Chunk]:
        key = (fingerprint(documents), settings, embedder_id)
        if key not in self.entries:
            chunks = make()
            self.entries = {k: v for k, v in self.entries.items() if k[0] == key[0]}  # other settings of these documents
            self.entries[key] = chunks
        return self.entries[key]


@dataclass(frozen=True)
class IndexState:
    collection: str
    exists: bool
    have: int  # how many of the chunks the collection holds
    chunks: int
    points: int  # all the points in the collection

    @property
    def complete(self) -> bool:
        return self.have >= self.chunks


def index_state(client, collection: str, chunks: Sequence[Chunk]) -> IndexState:
    if not store.exists(client, collection):
        return IndexState(collection, False, 0, len(chunks), 0)
    have = len(store.existing_ids(client, collection, [c.id for c in chunks]))
    return IndexState(collection, True, have, len(chunks), store.count(client, collection))


def available_embedders() -> list[str]:
    """Bundled sentence embedders, then downloaded Hub sentence-transformers models; an unreadable
    Hub cache leaves the bundled ones."""
    from playground import hub
    from playground.registry import list_models

    ids = [s.id for s in list_models(include_cached_hub=False) if s.can_embed]
    try:
        for repo in hub.cached_hub_models():
            folder = hub.local_snapshot(repo)
            if folder is not None and (folder / "modules.json").is_file():
                ids.append(repo)
    except Exception:  # noqa: BLE001 - a broken cache never breaks the page
        pass
    return ids

"""Retrieval-augmented generation, step by step: documents -> chunks -> embeddings -> a Qdrant
collection -> retrieved chunks (dense, sparse, hybrid) -> a prompt that fits -> an answer with
citations; plus A/B of two setups, recall@k / MRR evaluation and saved setups.

Modules: `documents` (load and check files, the sample corpus), `chunking` (four splitters with
exact offsets), `embedding` (batched, with progress), `store` (Qdrant collections and points),
`retrieval` (dense, sparse, hybrid, neighbours, ranks per method), `pipeline` (indexing, the
prompt, the answer, A/B, evaluation), `setups` (saved setups). None of them imports streamlit.
"""

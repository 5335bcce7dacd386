"""The Hugging Face Hub: search, model facts, size checks and downloads, via huggingface_hub.

Two kinds of download: a model's config, tokenizer and safetensors (`download`, for transformers),
and one GGUF file of a repo (`list_gguf_files`, `download_gguf`, for llama.cpp). Both check the
size against free memory before a byte is fetched, report progress as bytes arrive, use the local
cache first (so a file once downloaded works with the Hub down) and only the cache when offline.

Everything goes through `huggingface_hub`, so the usual environment applies: HF_HOME
(cache), HF_TOKEN (gated repos), HF_ENDPOINT (a mirror, or the tests' local server) and
HF_HUB_OFFLINE (never touch the network). Only config, tokenizer and safetensors files are
downloaded: pickled weights (``*.bin``, ``*.pt``) are never fetched, never loaded.

What it leaves out: turning downloaded files into a model (playground.loading).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub as hfh
from huggingface_hub import errors as hf_errors

from playground.errors import (
    GatedModelError,
    HubUnavailableError,
    ModelNotCachedError,
    InputError,
    ModelTooLargeError,
    NoGGUFError,
    NoSafetensorsError,
    PlaygroundError,
    UnknownModelError,
)
from playground.secrets import redact

ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]
# What a tokenizer needs (the tokenization page fetches these alone, not the weights).
TOKENIZER_PATTERNS = [
    "config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
    "merges.txt",
    "*.tiktoken",
    "*.jinja",
    "chat_template.json",
]
Progress = Callable[[float, str], None]
# Bytes per parameter of the dtypes the Hub reports in a repo's safetensors metadata.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1}
# What a search asks the Hub to return for each result (without it the Hub omits sizes and gating).
SEARCH_FIELDS = ["downloads", "likes", "pipeline_tag", "library_name", "tags", "gated", "safetensors", "cardData"]


@dataclass(frozen=True)
class HubModel:
    """What the Hub says of one repo, before anything is downloaded."""

    id: str
    downloads: int
    likes: int
    pipeline_tag: str | None
    license: str | None
    gated: bool
    parameters: int | None
    safetensors_bytes: int  # 0 when the repo has no safetensors (or file sizes were not asked for)
    library: str | None
    dtype_parameters: tuple[tuple[str, int], ...] = ()  # ("BF16", 134_515_008), from the safetensors metadata

    @property
    def has_safetensors(self) -> bool:
        return self.safetensors_bytes > 0

    @property
    def weights_bytes(self) -> int | None:
        """Size of the weights: the safetensors files when known, else parameters x bytes of their dtype."""
        if self.safetensors_bytes:
            return self.safetensors_bytes
        if self.dtype_parameters:
            return int(sum(n * DTYPE_BYTES.get(d.upper(), 4) for d, n in self.dtype_parameters))
        return None


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def shown_endpoint() -> str:
    """The endpoint as a message may show it: a user, password or token in HF_ENDPOINT is masked."""
    return redact(endpoint(), secrets=[os.environ.get("HF_TOKEN")])


def cache_dir() -> Path:
    """The Hub cache folder, read from the environment at call time (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


_REACH: dict[str, tuple[float, bool]] = {}


def check_reachable(timeout: float = 2.0) -> None:
    """Fail fast with HubUnavailableError when nothing answers at the endpoint.

    huggingface_hub retries a refused connection with back-off for about 20 s; a page should
    say "the Hub cannot be reached" at once instead. A result is remembered for 30 s.
    """
    import socket
    import time
    from urllib.parse import urlparse

    url = urlparse(endpoint())
    key = url.netloc
    now = time.monotonic()
    if key in _REACH and now - _REACH[key][0] < 30:
        ok = _REACH[key][1]
    else:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname, port), timeout=timeout):
                ok = True
        except OSError:
            ok = False
        _REACH[key] = (now, ok)
    if not ok:
        raise HubUnavailableError(
            f"The Hub at {shown_endpoint()} cannot be reached. Bundled and already downloaded models still work; "
            "set HF_ENDPOINT to a mirror if you have one."
        )


def _api() -> hfh.HfApi:
    return hfh.HfApi(endpoint=endpoint(), token=os.environ.get("HF_TOKEN") or None)


def translate(exc: BaseException, repo: str) -> PlaygroundError:
    """A huggingface_hub / network exception as one of ours, with what to do."""
    if isinstance(exc, PlaygroundError):
        return exc
    if isinstance(exc, hf_errors.GatedRepoError):
        return GatedModelError(
            f"{repo} is gated: accept its license on the Hub, then set HF_TOKEN to a token with access and restart."
        )
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return UnknownModelError(f"{repo} was not found on the Hub ({shown_endpoint()}). Check the spelling, or set HF_TOKEN if it is private.")
    if isinstance(exc, (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled if hasattr(hf_errors, "OfflineModeIsEnabled") else ())):
        return ModelNotCachedError(
            f"{repo} is not in the local cache and the Hub cannot be used (HF_HUB_OFFLINE is set or the Hub is unreachable). "
            "Download it once while online, or pick a bundled model."
        )
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return NoSafetensorsError(f"{repo} lacks a file the model needs: {exc}")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        return HubUnavailableError(f"The Hub at {shown_endpoint()} answered with an error for {repo}: {exc}")
    name = type(exc).__name__
    if "Connect" in name or "Timeout" in name or isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return HubUnavailableError(
            f"The Hub at {shown_endpoint()} cannot be reached ({name}). Bundled and already downloaded models still work."
        )
    return HubUnavailableError(f"Hub request for {repo} failed ({name}): {exc}")


def _to_hub_model(info) -> HubModel:
    siblings = info.siblings or []
    st_bytes = sum((s.size or 0) for s in siblings if s.rfilename.endswith(".safetensors"))
    params = None
    by_dtype: tuple[tuple[str, int], ...] = ()
    if getattr(info, "safetensors", None) is not None:
        params = getattr(info.safetensors, "total", None)
        by_dtype = tuple(sorted((str(k), int(v)) for k, v in (getattr(info.safetensors, "parameters", None) or {}).items()))
    card = getattr(info, "card_data", None) or getattr(info, "cardData", None)
    lic = None
    if card is not None:
        lic = card.get("license") if hasattr(card, "get") else getattr(card, "license", None)
    if lic is None:
        for tag in info.tags or []:
            if tag.startswith("license:"):
                lic = tag.split(":", 1)[1]
    return HubModel(
        id=info.id,
        downloads=int(getattr(info, "downloads", 0) or 0),
        likes=int(getattr(info, "likes", 0) or 0),
        pipeline_tag=getattr(info, "pipeline_tag", None),
        license=lic,
        gated=bool(getattr(info, "gated", False)),
        parameters=params,
        safetensors_bytes=st_bytes,
        library=getattr(info, "library_name", None),
        dtype_parameters=by_dtype,
    )


def search(query: str, sort: str = "downloads", limit: int = 20) -> list[HubModel]:
    """Text-generation models whose name matches `query`, most downloaded (or liked) first."""
    if is_offline():
        raise HubUnavailableError("HF_HUB_OFFLINE is set: the Hub is not searched. Cached models are listed instead.")
    if sort not in ("downloads", "likes"):
        raise ValueError(f"sort must be 'downloads' or 'likes', not {sort!r}")
    try:
        check_reachable()
        found = _api().list_models(search=query or None, pipeline_tag="text-generation", sort=sort, limit=limit,
                                   expand=SEARCH_FIELDS)
        return [_to_hub_model(m) for m in found]
    except Exception as exc:  # noqa: BLE001 - translated for the page
        raise translate(exc, query or "search") from exc


def model_info(repo: str) -> HubModel:
    """Facts of one repo, file sizes included (no download)."""
    if is_offline():
        raise ModelNotCachedError(f"HF_HUB_OFFLINE is set; no facts about {repo} can be fetched.")
    try:
        check_reachable()
        return _to_hub_model(_api().model_info(repo, files_metadata=True))
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, repo) from exc


def available_memory() -> int:
    """Bytes this process may use for weights: free RAM, or PLAYGROUND_MEMORY_LIMIT if set."""
    limit = os.environ.get("PLAYGROUND_MEMORY_LIMIT")
    if limit:
        return int(float(limit))
    import psutil

    return int(psutil.virtual_memory().available)


def memory_needed(info: HubModel) -> int:
    """Bytes the model will take in fp32 on the CPU, with 20% headroom."""
    if info.parameters:
        return int(info.parameters * 4 * 1.2)
    # Without a parameter count assume the worst: half-precision on disk, doubled in fp32.
    return int(info.safetensors_bytes * 2 * 1.2)


def check_fits(info: HubModel) -> None:
    if not info.has_safetensors:
        raise NoSafetensorsError(
            f"{info.id} has no safetensors weights. Only safetensors (or GGUF) are loaded; pickled .bin files never are."
        )
    need, have = memory_needed(info), available_memory()
    if need > have:
        raise ModelTooLargeError(
            f"{info.id} needs about {need / 2**30:,.1f} GiB of memory in fp32 and {have / 2**30:,.1f} GiB is free. "
            "Pick a smaller model."
        )


def _byte_bar(on_bytes: Callable[[int], None]):
    """A tqdm class for hf_hub_download that hands the bytes received so far to `on_bytes`, drawing nothing."""
    from tqdm import tqdm as base

    class _Bar(base):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.received = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            self.received += int(n or 0)
            on_bytes(self.received)

    return _Bar


def _complete(folder: Path, weights: bool) -> bool:
    """A snapshot has what a model (weights=True) or a tokenizer alone needs."""
    if weights:
        return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    return any(folder.glob(p) for p in ("tokenizer*", "vocab*", "*.tiktoken"))


def download(repo: str, progress: Progress | None = None, weights: bool = True) -> Path:
    """Config, tokenizer and safetensors of `repo` into HF_HOME; the local snapshot folder.
    weights=False fetches the config and tokenizer files alone (no size check: they are small).

    Checks the size against free memory first. With HF_HUB_OFFLINE, only the cache is used.
    `progress(fraction, message)` is called as bytes arrive: fractions only grow and end at 1.0.
    """
    report = progress or (lambda f, m: None)
    patterns = ALLOW_PATTERNS if weights else TOKENIZER_PATTERNS
    try:
        if is_offline():
            folder = Path(hfh.snapshot_download(repo, local_files_only=True, allow_patterns=patterns,
                                                cache_dir=cache_dir()))
            if not _complete(folder, weights):
                raise hf_errors.LocalEntryNotFoundError(f"{repo}: only part of it is cached")
            return folder
        if weights:
            info = model_info(repo)
            check_fits(info)
            report(0.0, f"downloading {info.safetensors_bytes / 2**20:,.1f} MiB of safetensors")
        else:
            report(0.0, f"downloading the tokenizer of {repo}")
        entries = [
            (e.path, int(getattr(e, "size", 0) or 0))
            for e in _api().list_repo_tree(repo, recursive=True)
            if hasattr(e, "size") and any(Path(e.path).match(p) for p in patterns)
        ]
        if not entries:
            what = "config, tokenizer or safetensors" if weights else "tokenizer"
            raise NoSafetensorsError(f"{repo} has no {what} files.")
        total = sum(size for _, size in entries) or 1
        done = 0
        shown = [0.0]
        folder: Path | None = None
        for i, (name, size) in enumerate(entries):
            label = f"{name} ({i + 1}/{len(entries)})"

            def on_bytes(received: int, done=done, size=size, label=label) -> None:
                fraction = (done + min(received, size)) / total
                if fraction - shown[0] >= 0.005:  # a bar redraw per half percent at most
                    shown[0] = fraction
                    report(fraction, f"{label}: {min(received, size) / 2**20:,.1f} of {size / 2**20:,.1f} MiB")

            local = Path(hfh.hf_hub_download(repo, name, endpoint=endpoint(), cache_dir=cache_dir(),
                                              token=os.environ.get("HF_TOKEN") or None,
                                              tqdm_class=_byte_bar(on_bytes)))
            folder = local.parents[len(Path(name).parts) - 1]
            done += size
            shown[0] = max(shown[0], done / total)
            report(done / total, label)
        if folder is None or not _complete(folder, weights):
            raise NoSafetensorsError(f"{repo} has no tokenizer files." if not weights else
                                     f"{repo} has no safetensors weights.")
        return folder
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, repo) from exc


def local_snapshot(repo: str, weights: bool = True) -> Path | None:
    """The cached snapshot folder of `repo` if it holds a whole model (weights=False: a tokenizer), or None.
    Never touches the network."""
    try:
        folder = Path(hfh.snapshot_download(repo, local_files_only=True, cache_dir=cache_dir(),
                                            allow_patterns=ALLOW_PATTERNS if weights else TOKENIZER_PATTERNS))
    except Exception:  # noqa: BLE001 - not cached
        return None
    return folder if _complete(folder, weights) else None


def cached_hub_models() -> list[str]:
    """Repo ids of models in the local HF cache that have a config and safetensors."""
    try:
        folder = cache_dir()
        if not folder.is_dir():
            return []
        info = hfh.scan_cache_dir(folder)
    except Exception:  # noqa: BLE001 - no cache yet
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        names = {Path(f.file_name).name for rev in repo.revisions for f in rev.files}
        if "config.json" in names and any(n.endswith(".safetensors") for n in names):
            out.append(repo.repo_id)
    return sorted(out)


@dataclass(frozen=True)
class HubStatus:
    """Whether the Hub can be searched right now, and if not, why, in words."""

    endpoint: str
    reachable: bool
    offline: bool
    message: str


def status() -> HubStatus:
    """Check the endpoint once (fast: a TCP connect, remembered 30 s); never raises."""
    if is_offline():
        return HubStatus(shown_endpoint(), False, True,
                         "HF_HUB_OFFLINE is set, so the Hub is not contacted. Models already downloaded still work.")
    try:
        check_reachable()
    except PlaygroundError as exc:
        return HubStatus(shown_endpoint(), False, False, str(exc))
    return HubStatus(shown_endpoint(), True, False, f"Connected to {shown_endpoint()}.")


# --- GGUF files, for llama.cpp ------------------------------------------------------------

_SPLIT_GGUF = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
GGUF_HEADROOM = 1.2  # weights are mapped as they are; the KV cache and compute buffers come on top


@dataclass(frozen=True)
class GGUFFile:
    """One GGUF file of a Hub repo, before (or after) it is downloaded."""

    repo: str
    name: str  # its path in the repo ("Q4/model-Q4_K_M.gguf" in a folder)
    size: int  # bytes
    quantization: str  # from the name, e.g. "Q4_K_M" (registry.quantization_of); "GGUF" when it names none

    @property
    def id(self) -> str:
        """Its catalogue id, ``gguf:owner/name/file.gguf``."""
        from playground.registry import gguf_id

        return gguf_id(self.repo, self.name)

    @property
    def is_split(self) -> bool:
        """One part of a model split over several files (``-00001-of-00003.gguf``)."""
        return bool(_SPLIT_GGUF.search(self.name))


def _gguf_file(repo: str, name: str, size: int) -> GGUFFile:
    from playground.registry import quantization_of

    return GGUFFile(repo, name, int(size or 0), quantization_of(Path(name).name))


def gguf_memory_needed(size: int) -> int:
    """Bytes a GGUF file takes in llama.cpp: the file (mapped as it is) with 20% headroom for the KV cache."""
    return int(size * GGUF_HEADROOM)


def check_gguf_fits(f: GGUFFile) -> None:
    need, have = gguf_memory_needed(f.size), available_memory()
    if need > have:
        raise ModelTooLargeError(
            f"{f.name} from {f.repo} is {f.size / 2**30:,.1f} GiB and needs about {need / 2**30:,.1f} GiB of memory "
            f"in llama.cpp; {have / 2**30:,.1f} GiB is free. Pick a smaller quantization (a lower Q number) or a smaller model."
        )


def cached_gguf_files(repo: str | None = None) -> list[GGUFFile]:
    """GGUF files in the local HF cache (of `repo`, or of every repo); never touches the network."""
    try:
        folder = cache_dir()
        if not folder.is_dir():
            return []
        info = hfh.scan_cache_dir(folder)
    except Exception:  # noqa: BLE001 - no cache yet
        return []
    out: dict[tuple[str, str], GGUFFile] = {}
    for r in info.repos:
        if r.repo_type != "model" or (repo is not None and r.repo_id != repo):
            continue
        for rev in r.revisions:
            for f in rev.files:
                if f.file_name.lower().endswith(".gguf"):
                    name = Path(f.file_path).relative_to(rev.snapshot_path).as_posix()
                    out[(r.repo_id, name)] = _gguf_file(r.repo_id, name, f.size_on_disk)
    return sorted(out.values(), key=lambda g: (g.repo, g.size, g.name))


def list_gguf_files(repo: str) -> list[GGUFFile]:
    """The GGUF files of `repo` with their sizes and quantization, smallest first (no download).

    With HF_HUB_OFFLINE set, the repo's files already in the local cache.
    """
    if is_offline():
        cached = cached_gguf_files(repo)
        if cached:
            return cached
        raise ModelNotCachedError(
            f"HF_HUB_OFFLINE is set and no GGUF file of {repo} is in the local cache. "
            "Download one once while online, or pick a bundled model."
        )
    try:
        check_reachable()
        info = _api().model_info(repo, files_metadata=True)
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, repo) from exc
    files = [_gguf_file(repo, s.rfilename, s.size or 0) for s in (info.siblings or [])
             if s.rfilename.lower().endswith(".gguf")]
    if not files:
        raise NoGGUFError(f"{repo} has no GGUF files. Pick a repo whose name ends in -GGUF, or add it as a Hub model.")
    return sorted(files, key=lambda g: (g.size, g.name))


def local_gguf(repo: str, filename: str) -> Path | None:
    """The cached copy of one GGUF file, or None; never touches the network."""
    try:
        found = hfh.try_to_load_from_cache(repo, filename, cache_dir=cache_dir())
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def download_gguf(repo: str, filename: str, progress: Progress | None = None) -> Path:
    """One GGUF file of `repo` into HF_HOME; its local path.

    The cached copy is used if there is one (no network). Otherwise the file's size is read from
    the Hub first and a file that will not fit in free memory is refused before a byte is fetched;
    `progress(fraction, message)` follows the bytes. With HF_HUB_OFFLINE only the cache is used.
    """
    report = progress or (lambda f, m: None)
    if _SPLIT_GGUF.search(filename):
        raise InputError(
            f"{filename} is one part of a model split over several files, which LLM Playground does not load. "
            "Pick a quantization that is one file."
        )
    local = local_gguf(repo, filename)
    if local is not None:
        report(1.0, f"{filename} is in the local cache")
        return local
    if is_offline():
        raise ModelNotCachedError(
            f"{filename} of {repo} is not in the local cache and HF_HUB_OFFLINE is set. "
            "Download it once while online, or pick a bundled model."
        )
    try:
        found = {f.name: f for f in list_gguf_files(repo)}
        if filename not in found:
            names = ", ".join(sorted(found)[:8]) + (" ..." if len(found) > 8 else "")
            raise UnknownModelError(f"{repo} has no file {filename!r}; its GGUF files are: {names}.")
        f = found[filename]
        check_gguf_fits(f)
        size = max(f.size, 1)
        report(0.0, f"downloading {filename}: {f.size / 2**20:,.1f} MiB")
        shown = [0.0]

        def on_bytes(received: int) -> None:
            fraction = min(received, size) / size
            if fraction - shown[0] >= 0.005:  # a bar redraw per half percent at most
                shown[0] = fraction
                report(fraction, f"{filename}: {min(received, size) / 2**20:,.1f} of {size / 2**20:,.1f} MiB")

        path = Path(hfh.hf_hub_download(repo, filename, endpoint=endpoint(), cache_dir=cache_dir(),
                                        token=os.environ.get("HF_TOKEN") or None, tqdm_class=_byte_bar(on_bytes)))
        report(1.0, f"{filename} downloaded")
        return path
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, repo) from exc

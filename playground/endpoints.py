"""The endpoints a person added: OpenAI-compatible servers, by name, kept across restarts.

An endpoint is a name, a base URL, optionally the *name* of an environment variable that holds
its key, and a timeout. They are kept in ``$PLAYGROUND_DATA/endpoints.json``, written atomically
(a temporary file in the same folder, then a rename) under a file lock, so two app processes
adding at once do not lose one another's endpoint. When ``DATABASE_URL`` is set they live in that
PostgreSQL database instead (its ``endpoints`` table, see `playground.database`), so every app
process behind a load balancer sees the same list; a change is one transaction under an advisory
lock.

What is stored is URLs, variable names and timeouts: **never a key**. A key either lives in the
environment variable the endpoint names, or is typed for one browser session and passed to
`playground.engines.remote` call by call. A URL that carries credentials
(``http://user:pass@host``) or a query string is refused, and so is a "variable name" that looks
like a pasted key; the messages never repeat what was refused.

    add_endpoint("local", "http://127.0.0.1:8080", key_env="LOCAL_LLM_KEY")
    [e.name for e in list_endpoints()]   # ['local'] (after a restart too)
    remove_endpoint("local")

A base URL with no path gets ``/v1`` (``http://host:8000`` -> ``http://host:8000/v1``); a URL
with a path is used as given (``https://router.huggingface.co/v1``, ``http://host/openai/v1``),
and the API's paths (``/models``, ``/chat/completions``, ``/completions``) go after it.

What it leaves out: talking to the servers (playground.engines.remote) and the sidebar form.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from playground.errors import EndpointConfigError, EndpointStoreError
from playground.options import option, validate
from playground.paths import data_root

STORE_NAME = "endpoints.json"
STORE_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # as playground.registry's endpoint ids
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible server. Holds no key: `key_env` names the variable that does."""

    name: str
    url: str  # the API base, e.g. http://127.0.0.1:8080/v1 (no credentials, no query)
    key_env: str = ""  # the environment variable holding the key; "" if the server needs none or it is typed
    timeout: float = option(60.0, 1.0, 600.0, "seconds to wait for the server to answer, or for its next token", 1.0)

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def env_key(self) -> str | None:
        """The key from the endpoint's environment variable, read now (None if unset or empty)."""
        return (os.environ.get(self.key_env) or None) if self.key_env else None

    @property
    def key_status(self) -> str:
        """One line for the sidebar: where the key comes from (never the key)."""
        if not self.key_env:
            return "no key variable: the server needs none, or type a key for this session"
        return f"key from ${self.key_env}" + ("" if self.env_key() else f" (not set: set {self.key_env} or type a key)")


def normalize_url(url: str) -> str:
    """The API base for `url`, or EndpointConfigError saying what to fix (never repeating a password)."""
    if not isinstance(url, str) or not url.strip():
        raise EndpointConfigError("No URL given: type the server's base URL, e.g. http://127.0.0.1:8080/v1.")
    raw = url.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        raise EndpointConfigError(
            "That URL cannot be read (check the port: a number after the host, e.g. http://127.0.0.1:8080/v1)."
        ) from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        host = parts.hostname or "the host"
        raise EndpointConfigError(
            f"The URL holds a user name or password before {host}; remove them (type http(s)://{host}...). "
            "Give the key as an environment variable's name, or type it for this session: keys are never saved."
        )
    if parts.scheme.lower() not in ("http", "https"):
        raise EndpointConfigError(
            f"The URL must start with http:// or https:// (it starts with {parts.scheme + '://' if parts.scheme else 'neither'})."
        )
    if not parts.hostname:
        raise EndpointConfigError("The URL has no host: type it as http(s)://host:port/v1.")
    if parts.query or parts.fragment:
        raise EndpointConfigError(
            "The URL has a query string or fragment (after ? or #); remove it. A key never goes in the URL: "
            "name its environment variable or type it for this session."
        )
    if port is not None and not (0 < port < 65536):
        raise EndpointConfigError(f"The port {port} is out of range (1-65535).")
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))


def _looks_like_a_key(value: str) -> bool:
    if re.match(r"^(hf|sk|gsk|xai|pplx|nvapi|sk-proj|r8)[_-]", value, re.IGNORECASE) and len(value) >= 16:
        return True
    # variable names are words (HF_TOKEN, OPENAI_API_KEY); keys are long runs of mixed case and digits
    return len(value) >= 24 and any(c.islower() for c in value) and any(c.isdigit() for c in value) and value.count("_") <= 2


def check_env_name(key_env: str | None) -> str:
    """The variable name, stripped, or EndpointConfigError (never repeating a pasted key)."""
    key_env = (key_env or "").strip().lstrip("$")
    if not key_env:
        return ""
    if not _ENV_NAME.match(key_env) or _looks_like_a_key(key_env):
        raise EndpointConfigError(
            "The key variable must be the *name* of an environment variable (letters, digits and _, "
            "like OPENAI_API_KEY). If that was the key itself, type it in the session key field instead: "
            "it is used for this session only and never saved."
        )
    return key_env


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise EndpointConfigError(
            f"The endpoint name {name[:40]!r} is not usable: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'lab-vllm')."
        )
    return name


# --- the store ---------------------------------------------------------------------------


def store_path() -> Path:
    return data_root() / STORE_NAME


def _database():
    """The shared database when DATABASE_URL is set, else None (the JSON file)."""
    from playground.database import ENV, Database

    return Database.from_env(label="endpoints") if (os.environ.get(ENV) or "").strip() else None


_tx = threading.local()  # the open transaction of `_locked()` on the shared database, per thread


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    db = _database()
    if db is not None:
        from playground.database import ENDPOINTS_LOCK

        with db.connect() as con:
            con.execute("SELECT pg_advisory_xact_lock(?)", (ENDPOINTS_LOCK,))
            _tx.con = con
            try:
                yield
            finally:
                _tx.con = None
        return
    lock = data_root() / f".{STORE_NAME}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_db(con) -> list[Endpoint]:
    rows = con.execute("SELECT name, url, key_env, timeout FROM endpoints ORDER BY position").fetchall()
    return [Endpoint(name=r["name"], url=r["url"], key_env=r["key_env"], timeout=float(r["timeout"])) for r in rows]


def _read() -> list[Endpoint]:
    if getattr(_tx, "con", None) is not None:
        return _read_db(_tx.con)
    db = _database()
    if db is not None:
        with db.connect() as con:
            return _read_db(con)
    path = store_path()
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["endpoints"]
        out = [Endpoint(name=r["name"], url=r["url"], key_env=r.get("key_env", ""),
                        timeout=float(r.get("timeout", 60.0))) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EndpointStoreError(
            f"{path} cannot be read ({type(exc).__name__}); it is left as it is. "
            "Fix it, or move it away to start with no endpoints."
        ) from None
    return out


def _write(endpoints: list[Endpoint]) -> None:
    con = getattr(_tx, "con", None)
    if con is not None:  # inside `_locked()` on the shared database: the whole list, in its transaction
        con.execute("DELETE FROM endpoints")
        con.executemany("INSERT INTO endpoints (name, position, url, key_env, timeout) VALUES (?, ?, ?, ?, ?)",
                        [(e.name, i, e.url, e.key_env, e.timeout) for i, e in enumerate(endpoints)])
        return
    path = store_path()
    data = {"version": STORE_VERSION,
            "endpoints": [{k: v for k, v in asdict(e).items()} for e in endpoints]}
    fd, tmp = tempfile.mkstemp(prefix=f".{STORE_NAME}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise EndpointStoreError(f"The endpoints could not be saved to {path}: {exc.strerror or exc}.") from None


def list_endpoints() -> list[Endpoint]:
    """The endpoints added so far, in the order they were added."""
    return _read()


def get_endpoint(name: str) -> Endpoint:
    for e in _read():
        if e.name == name:
            return e
    known = ", ".join(e.name for e in _read()) or "none yet"
    raise EndpointConfigError(f"No endpoint is named {name[:64]!r} (added: {known}). Add it in the sidebar first.")


def add_endpoint(name: str, url: str, key_env: str | None = None, timeout: float = 60.0,
                 replace_existing: bool = False) -> Endpoint:
    """Check and keep an endpoint; returns it. A name already taken is refused unless `replace_existing`."""
    endpoint = validate(Endpoint(name=check_name(name), url=normalize_url(url), key_env=check_env_name(key_env),
                                 timeout=timeout))
    with _locked():
        current = _read()
        if any(e.name == endpoint.name for e in current):
            if not replace_existing:
                raise EndpointConfigError(
                    f"An endpoint named {endpoint.name!r} exists already ({next(e.url for e in current if e.name == endpoint.name)}); "
                    "pick another name or remove that one first."
                )
            current = [endpoint if e.name == endpoint.name else e for e in current]
        else:
            current.append(endpoint)
        _write(current)
    return endpoint


def update_endpoint(name: str, *, timeout: float | None = None, key_env: str | None = None) -> Endpoint:
    """Change an endpoint's timeout or key variable; returns the changed endpoint."""
    with _locked():
        current = _read()
        for i, e in enumerate(current):
            if e.name == name:
                changed = replace(e, timeout=e.timeout if timeout is None else timeout,
                                  key_env=e.key_env if key_env is None else check_env_name(key_env))
                validate(changed)
                current[i] = changed
                _write(current)
                return changed
    return get_endpoint(name)  # raises with the names there are


def remove_endpoint(name: str) -> bool:
    """Forget an endpoint; True if there was one by that name."""
    with _locked():
        current = _read()
        kept = [e for e in current if e.name != name]
        if len(kept) == len(current):
            return False
        _write(kept)
        return True

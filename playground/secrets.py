"""Keeping credentials out of what is shown: one `redact()` for every URL and error text.

A credential can reach a message in three ways: as the user part of a URL
(``http://user:pass@host``), as a query parameter (``?api_key=...``, ``&token=...``), or as a
key that an error message quotes back (a Hugging Face token ``hf_...``, an OpenAI-style
``sk-...``, an ``Authorization: Bearer ...`` header). `redact` replaces each with ``***``;
the secrets a caller knows (the API key typed on a page) are passed in and replaced wherever
they appear, whatever their shape.

>>> redact("Qdrant at http://admin:hunter2@db.example:6333 does not answer")
'Qdrant at http://***@db.example:6333 does not answer'
>>> redact("https://q.example/collections?api_key=abc123&limit=5")
'https://q.example/collections?api_key=***&limit=5'
>>> redact("refused the key s3cr3t-value", secrets=["s3cr3t-value"])
'refused the key ***'
>>> redact("Authorization: Bearer eyJhbGciOi.J9")
'Authorization: Bearer ***'
>>> redact("http://localhost:6333")
'http://localhost:6333'

What it leaves out: storing secrets (keys come from the environment or the session, never from
disk or a link) and anything a person writes on purpose into a prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
SECRET_PARAMS = ("api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "password", "passwd",
                 "secret", "client_secret", "sig", "signature")
MIN_SECRET = 4  # a known secret shorter than this is not searched for (it would mask ordinary words)

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@?#]+)@")
_PARAM = re.compile(r"(?P<name>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r"))=(?P<value>[^&#\s'\"]*)",
                    re.IGNORECASE)
_HEADER = re.compile(r"(?P<name>\b(?:api[-_]?key|authorization|x-api-key)\b[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)"
                     r"(?P<value>[^\s,;&#'\"}]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<name>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
_TOKENS = re.compile(r"\b(?:hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,})\b")


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """`text` with URL credentials, secret query parameters, auth headers, known token shapes and
    every string of `secrets` replaced by ``***``."""
    out = "" if text is None else str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", out)
    out = _PARAM.sub(lambda m: f"{m['name']}={MASK}", out)
    out = _HEADER.sub(lambda m: f"{m['name']}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m['name']}{MASK}", out)
    out = _TOKENS.sub(MASK, out)
    return out


def has_credentials(url: str) -> bool:
    """Whether a URL carries a user, a password or a secret query parameter.

    >>> has_credentials("http://u:p@host"), has_credentials("http://host:6333")
    (True, False)
    """
    return redact(url) != url

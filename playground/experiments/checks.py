"""Automatic checks on each output, and scores against a reference answer.

- `Check`: contains, does not contain (both ignoring case), regex, valid JSON, length bounds.
  A regex runs on RE2 (google-re2), which matches in time linear in the output and never
  backtracks, so a pattern such as ``(a+)+$`` cannot freeze the server; the price is that
  RE2 refuses backreferences (``\\1``) and lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``),
  which is said when the check is made. A pattern is at most REGEX_CHARS long and its
  compiled program at most REGEX_MEMORY bytes (playground.limits).
- `valid JSON` parses the whole output (a ```json fence around it is allowed); JSON nested
  deeper than JSON_DEPTH counts as not valid rather than reaching Python's recursion limit.
- Scores against a reference: exact match and token-overlap F1 (both after SQuAD-style
  normalisation: lower case, no punctuation, no articles), cosine similarity of sentence
  embeddings (`embedding_similarity`, with the embedder the caller passes).

What it leaves out: loading the embedder (the page passes it) and judging (judge).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from playground.errors import InputError
from playground.limits import JSON_DEPTH, REGEX_CHARS, REGEX_MEMORY
from playground.uploads import json_depth

CHECK_KINDS = ("contains", "not contains", "regex", "valid JSON", "length")
LENGTH_UNITS = ("characters", "words")
# What RE2 refuses that Python's re accepts, with how to say it: (a test on the pattern, the feature)
_UNSUPPORTED = (
    (re.compile(r"\(\?<?[=!]"), "lookahead and lookbehind ((?=...), (?!...), (?<=...), (?<!...))"),
    (re.compile(r"\\[1-9]|\(\?P=\w+\)"), "backreferences (\\1, (?P=name))"),
    (re.compile(r"\(\?>|[*+?}]\+"), "atomic groups and possessive quantifiers ((?>...), a*+)"),
    (re.compile(r"\(\?\("), "conditionals ((?(1)...))"),
)


@lru_cache(maxsize=256)
def compile_regex(pattern: str):
    """The RE2 program for a check's pattern; an InputError naming what RE2 does not support."""
    import re2

    REGEX_CHARS.check(len(pattern), "The regex check's pattern", "Write a shorter pattern.")
    options = re2.Options()
    options.max_mem = REGEX_MEMORY
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        try:
            re.compile(pattern)
        except re.error as py_exc:
            raise InputError(f"The regex check /{pattern}/ does not compile: {py_exc}.") from exc
        unsupported = [what for test, what in _UNSUPPORTED if test.search(pattern)]
        if unsupported:
            raise InputError(
                f"The regex check /{pattern}/ uses {' and '.join(unsupported)}, which checks do not support: they run "
                "on RE2, which never backtracks, so no pattern can stall the server. Rewrite it without them "
                "(for 'does not contain X', use a 'not contains' check)."
            ) from exc
        why = exc.args[0].decode(errors="backslashreplace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise InputError(f"The regex check /{pattern}/ cannot be used: {why}. Checks run on RE2, which has no "
                         "backtracking; simplify the pattern (smaller {n,m} counts, fewer alternatives).") from exc


@dataclass(frozen=True)
class Check:
    """An automatic check on each output. kind: contains | not contains | regex | valid JSON | length.

    contains / not contains compare case-insensitively; regex searches with RE2; valid JSON
    parses the whole output (a ```json fence around it is allowed); length counts
    characters or words and passes when lo <= length <= hi (either bound may be None).
    """

    kind: str
    value: str = ""
    lo: int | None = None
    hi: int | None = None
    unit: str = "characters"

    @property
    def label(self) -> str:
        if self.kind in ("contains", "not contains"):
            return f"{self.kind} '{self.value}'"
        if self.kind == "regex":
            return f"matches /{self.value}/"
        if self.kind == "length":
            lo = "" if self.lo is None else f"{self.lo} <= "
            hi = "" if self.hi is None else f" <= {self.hi}"
            return f"{lo}{self.unit}{hi}"
        return self.kind

    def validate(self) -> Check:
        if self.kind not in CHECK_KINDS:
            raise InputError(f"Check kind {self.kind!r} is not one of {', '.join(CHECK_KINDS)}.")
        if self.kind in ("contains", "not contains", "regex") and not self.value:
            raise InputError(f"The '{self.kind}' check needs a value to look for.")
        if self.kind == "regex":
            compile_regex(self.value)
        elif self.kind in ("contains", "not contains"):
            REGEX_CHARS.check(len(self.value), f"The '{self.kind}' check's text", "Look for a shorter text.")
        if self.kind == "length":
            if self.unit not in LENGTH_UNITS:
                raise InputError(f"Length unit {self.unit!r} is not one of {', '.join(LENGTH_UNITS)}.")
            if self.lo is None and self.hi is None:
                raise InputError("The length check needs a minimum, a maximum, or both.")
            if self.lo is not None and self.hi is not None and self.lo > self.hi:
                raise InputError(f"The length check's minimum ({self.lo}) is above its maximum ({self.hi}).")
        return self

    def __call__(self, output: str) -> bool:
        if self.kind == "contains":
            return self.value.casefold() in output.casefold()
        if self.kind == "not contains":
            return self.value.casefold() not in output.casefold()
        if self.kind == "regex":
            return compile_regex(self.value).search(output) is not None
        if self.kind == "valid JSON":
            text = output.strip()
            fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
            if fenced:
                text = fenced.group(1)
            if json_depth(text) > JSON_DEPTH.value:
                return False  # deeper than any answer needs, and deep enough to exhaust the parser's recursion
            try:
                json.loads(text)
            except (json.JSONDecodeError, ValueError, RecursionError):
                return False
            return True
        if self.kind == "length":
            n = len(output) if self.unit == "characters" else len(output.split())
            return (self.lo is None or n >= self.lo) and (self.hi is None or n <= self.hi)
        raise InputError(f"Check kind {self.kind!r} is not one of {', '.join(CHECK_KINDS)}.")


def run_checks(checks: Sequence[Check], output: str) -> tuple[bool, ...]:
    return tuple(c(output) for c in checks)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(output: str, reference: str) -> float:
    return float(normalize_answer(output) == normalize_answer(reference))


def token_f1(output: str, reference: str) -> float:
    """Token-overlap F1 (SQuAD): harmonic mean of precision and recall of shared normalised tokens."""
    pred, ref = normalize_answer(output).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def embedding_similarity(embedder, output: str, reference: str) -> float:
    """Cosine similarity of two sentence embeddings (a sentence-transformers model, e.g. MiniLM)."""
    vecs = embedder.encode([output, reference], normalize_embeddings=True, convert_to_numpy=True)  # (2, dims)
    return float((vecs[0] * vecs[1]).sum())

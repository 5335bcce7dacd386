"""Prompt templates: LangChain `ChatPromptTemplate`s in three formats, their variables, and rendering.

A `PromptVariant` is one template of an A/B experiment: a name ("A"), a user template, an
optional system message, and a format:

- ``f-string``: ``Answer: {question}`` (literal braces are written ``{{`` and ``}}``);
- ``mustache``: ``Answer: {{question}}``, sections ``{{#items}}...{{/items}}``. As in every
  mustache, ``{{x}}`` HTML-escapes its value (``<`` becomes ``&lt;``); ``{{{x}}}`` or ``{{& x}}``
  inserts it as it is, which is usually what a prompt wants;
- ``jinja2``: ``Answer: {{ question }}``, ``{% if context %}...{% endif %}``. Rendered by
  langchain-core's jinja2 formatter, which uses jinja2's ``SandboxedEnvironment``; on top of
  it, a template that names an attribute or item starting with ``_`` (``''.__class__``,
  ``x|attr('__globals__')``) is refused before rendering with a `TemplateError`, since the
  sandbox alone would print such an access as an empty string.

The variables are found automatically (LangChain's own parsers, in order of first use) and
become the columns of an experiment's input set:

>>> v = PromptVariant("A", "Answer in one word: {question}", system="You are {persona}.")
>>> v.variables
('persona', 'question')
>>> v.render({"persona": "terse", "question": "Capital of France?"}).user
'Answer in one word: Capital of France?'

`render` is strict: a variable without a value ("missing") and a value the template does
not use ("unknown") are both a `TemplateError` that names them. `check_columns` applies the
same two rules to an input set's columns for several variants at once.

Rendering is bounded (playground.limits, playground.bounded): a template is at most
TEMPLATE_CHARS long, renders within RENDER_SECONDS and gives at most RENDER_CHARS; jinja2 runs
in a sandbox that also bounds what one operation allocates; an f-string width such as
``{x:>999999999}`` is refused when the template is read. A bound that is hit is a `LimitError`
(an InputError) that names it.

What it leaves out: running the prompts (playground.experiments) and the chat template of a
model (playground.generate.format_prompt applies it to the rendered text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from playground.errors import TemplateError
from playground.limits import RENDER_CHARS, SYSTEM_CHARS, TEMPLATE_CHARS, TEMPLATE_NUMBER, LimitError

FORMATS = ("f-string", "mustache", "jinja2")


def _quoted(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(f"'{n}'" for n in names) if names else "none"


def _order(names: Iterable[str], text: str) -> list[str]:
    """Names in the order they first appear in `text` (ties and absent names last, alphabetically)."""

    def first(name: str) -> tuple[int, str]:
        m = re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text)
        return (m.start() if m else len(text), name)

    return sorted(set(names), key=first)


def _jinja2_unsafe_names(template: str) -> list[str]:
    """Attribute / item names starting with '_' that a jinja2 template reaches for, found in its syntax tree."""
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment

    tree = SandboxedEnvironment().parse(template)
    bad: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            bad.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            bad.append(node.arg.value)
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            for arg in node.args:
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str) and arg.value.startswith("_"):
                    bad.append(arg.value)
    return list(dict.fromkeys(bad))


def find_variables(text: str, template_format: str = "f-string", name: str = "template") -> tuple[str, ...]:
    """The variables of one template string, in order of first use; a TemplateError if it does not parse.

    Uses LangChain's parser for each format (`get_template_variables`). For mustache only the
    top-level name of ``{{person.name}}`` is a variable (``person``).
    """
    from langchain_core.prompts.string import get_template_variables

    if template_format not in FORMATS:
        raise TemplateError(f"{name}: format {template_format!r} is not one of {', '.join(FORMATS)}.")
    if not text:
        return ()
    if template_format == "f-string":
        from string import Formatter

        try:
            fields = [f for _, f, _, _ in Formatter().parse(text) if f is not None]
        except ValueError as exc:
            raise TemplateError(
                f"{name} is not a valid f-string template: {exc}. Write a literal brace as {{{{ or }}}}."
            ) from exc
        if any(f == "" for f in fields):
            raise TemplateError(f"{name} has an empty {{}} placeholder: give it a name, e.g. {{question}}.")
        for _, field_name, spec, _ in Formatter().parse(text):
            widths = [int(d) for d in re.findall(r"\d+", spec or "") if len(d) <= 12]
            if any(len(d) > 12 for d in re.findall(r"\d+", spec or "")) or any(w > TEMPLATE_NUMBER.value for w in widths):
                raise LimitError(f"{name}: the placeholder {{{field_name}:{spec}}} asks for a width of "
                                 f"{max(widths, default=0):,} or more; widths are at most {TEMPLATE_NUMBER.value:,}.")
    if template_format == "jinja2":
        from jinja2 import TemplateSyntaxError

        try:
            unsafe = _jinja2_unsafe_names(text)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{name} is not a valid jinja2 template (line {exc.lineno}): {exc.message}.") from exc
        if unsafe:
            raise TemplateError(
                f"{name} tries to reach Python internals ({_quoted(unsafe)}): jinja2 templates run in a sandbox "
                "where names starting with '_' are blocked. Use only your variables and their plain values."
            )
    try:
        if template_format == "jinja2":  # as LangChain does, but in the bounded sandbox: its code generator
            from jinja2 import meta  # folds constants, and a plain sandbox would compute 'x' * 10**9 right here

            from playground.bounded import environment

            found = meta.find_undeclared_variables(environment().parse(text))
        else:
            found = get_template_variables(text, template_format)
    except Exception as exc:  # noqa: BLE001 - LangChain raises ValueError, chevron its own errors
        raise TemplateError(f"{name} is not a valid {template_format} template: {exc}") from exc
    return tuple(_order(found, text))


@dataclass(frozen=True)
class RenderedPrompt:
    """What one variant says for one input row: the system message (if any) and the user message."""

    variant: str
    system: str | None
    user: str


@dataclass(frozen=True)
class PromptVariant:
    """One prompt template: a name, the user template, an optional system template, and a format."""

    name: str
    template: str
    system: str = ""
    format: str = "f-string"

    @property
    def label(self) -> str:
        return f"Template {self.name}"

    @cached_property
    def variables(self) -> tuple[str, ...]:
        """Variables of the system and user templates together, system first; TemplateError if invalid."""
        if self.format not in FORMATS:
            raise TemplateError(f"{self.label}: format {self.format!r} is not one of {', '.join(FORMATS)}.")
        if not self.template.strip():
            raise TemplateError(f"{self.label} is empty: write the prompt, e.g. 'Answer briefly: {{question}}'.")
        TEMPLATE_CHARS.check(len(self.template), self.label)
        SYSTEM_CHARS.check(len(self.system), f"{self.label}'s system message")
        sys_vars = find_variables(self.system, self.format, f"{self.label}'s system message")
        user_vars = find_variables(self.template, self.format, self.label)
        return tuple(dict.fromkeys([*sys_vars, *user_vars]))

    @cached_property
    def chat_template(self):
        """The LangChain ChatPromptTemplate: (system, human) messages, or (human) alone."""
        from langchain_core.prompts import ChatPromptTemplate

        self.variables  # noqa: B018 - validates (and refuses unsafe jinja2) before LangChain sees it
        messages = ([("system", self.system)] if self.system.strip() else []) + [("human", self.template)]
        try:
            return ChatPromptTemplate.from_messages(messages, template_format=self.format)
        except Exception as exc:  # noqa: BLE001
            raise TemplateError(f"{self.label} is not a valid {self.format} template: {exc}") from exc

    def render(self, values: Mapping[str, Any], extra: str = "error") -> RenderedPrompt:
        """Fill the template. A variable without a value, or (extra="error") a value the template
        does not use, is a TemplateError naming them; extra="ignore" drops unused values."""
        names = self.variables
        missing = [n for n in names if n not in values or values[n] is None]
        if missing:
            raise TemplateError(
                f"{self.label} needs {_quoted(missing)}, which the input does not give "
                f"(it gives {_quoted(k for k in values if values[k] is not None)})."
            )
        unknown = [k for k in values if k not in names]
        if unknown and extra == "error":
            raise TemplateError(
                f"{self.label} was given {_quoted(unknown)}, which it does not use (it uses {_quoted(names)})."
            )
        from playground.bounded import render_jinja2, time_limit

        given = {n: values[n] for n in names}
        try:
            with time_limit(what=f"Filling in {self.label}"):
                if self.format == "jinja2":  # the bounded sandbox (playground.bounded), not LangChain's plain one
                    system = render_jinja2(self.system, given, f"{self.label}'s system message") \
                        if self.system.strip() else None
                    user = render_jinja2(self.template, given, self.label)
                else:
                    messages = self.chat_template.format_messages(**given)
                    system, user = None, ""
                    for m in messages:
                        if m.type == "system":
                            system = str(m.content)
                        else:
                            user = str(m.content)
        except LimitError:
            raise
        except Exception as exc:  # noqa: BLE001 - SecurityError, UndefinedError, KeyError...
            from jinja2.exceptions import SecurityError

            if isinstance(exc, SecurityError):
                raise TemplateError(f"{self.label} was stopped by the jinja2 sandbox: {exc}") from exc
            raise TemplateError(f"{self.label} could not be filled in: {type(exc).__name__}: {exc}") from exc
        size = len(user) + len(system or "")
        if size > RENDER_CHARS.value:
            raise LimitError(f"{self.label} gives {size:,} characters for this row; a template's output is "
                             f"{RENDER_CHARS.text}. Make it, or the values it repeats, shorter.")
        return RenderedPrompt(self.name, system, user)


def check_columns(variants: Sequence[PromptVariant], columns: Iterable[str]) -> None:
    """Raise a TemplateError when a variant uses a variable that no column gives ("missing"),
    or a column is used by no variant ("unknown"): both are named, so a typo such as
    {questoin} vs a column 'question' is plain to see."""
    columns = list(columns)
    used: dict[str, None] = {}
    problems: list[str] = []
    for v in variants:
        for name in v.variables:
            used[name] = None
        missing = [n for n in v.variables if n not in columns]
        if missing:
            problems.append(f"{v.label} uses {_quoted(missing)}, which the inputs have no column for")
    unknown = [c for c in columns if c not in used]
    if unknown:
        problems.append(f"input column(s) {_quoted(unknown)} are used by no template")
    if problems:
        raise TemplateError(
            "; ".join(problems) + f". The templates use {_quoted(used)}; the inputs have {_quoted(columns)}."
        )


def all_variables(variants: Sequence[PromptVariant]) -> tuple[str, ...]:
    """The union of the variants' variables, in order of first use across them."""
    out: dict[str, None] = {}
    for v in variants:
        for name in v.variables:
            out[name] = None
    return tuple(out)

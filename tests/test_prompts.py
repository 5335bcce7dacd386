"""Prompt templates: variables per format, rendering, missing/unknown variables, the jinja2 sandbox."""

from __future__ import annotations

import pytest

from playground.errors import TemplateError
from playground.prompts import PromptVariant, all_variables, check_columns, find_variables


@pytest.mark.parametrize(
    "fmt, text, expected",
    [
        ("f-string", "Context: {context}\nQuestion: {question}\nAgain {context}. Braces {{literal}}", ("context", "question")),
        ("f-string", "Score {score:>5}", ("score",)),
        ("f-string", "no variables at all", ()),
        ("mustache", "Q: {{question}} {{#items}}- {{.}}\n{{/items}}{{^empty}}none{{/empty}} {{person.name}}",
         ("question", "items", "empty", "person")),
        ("jinja2", "{% if context %}Context: {{ context }}{% endif %}\nQ: {{ question | upper }} "
                   "{% for d in docs %}{{ d }}{% endfor %}", ("context", "question", "docs")),
    ],
)
def test_variables_are_found_for_each_format(fmt, text, expected):
    assert find_variables(text, fmt) == expected


def test_system_message_variables_come_first_and_render():
    v = PromptVariant("A", "Question: {question}", system="You are a {persona} assistant.")
    assert v.variables == ("persona", "question")
    r = v.render({"persona": "terse", "question": "Capital of France?"})
    assert r.system == "You are a terse assistant."
    assert r.user == "Question: Capital of France?"
    assert PromptVariant("B", "Question: {question}").render({"question": "x"}).system is None


@pytest.mark.parametrize("fmt, text", [
    ("f-string", "Q: {question} C: {context}"),
    ("mustache", "Q: {{question}} C: {{{context}}}"),
    ("jinja2", "Q: {{ question }} C: {{ context }}"),
])
def test_each_format_renders_the_same_text(fmt, text):
    r = PromptVariant("A", text, format=fmt).render({"question": "why?", "context": "<b>because</b> & \"so\""})
    assert r.user == 'Q: why? C: <b>because</b> & "so"'


def test_mustache_double_braces_escape_html_as_mustache_does():
    v = PromptVariant("M", "{{context}} | {{{context}}} | {{& context}}", format="mustache")
    assert v.variables == ("context",)
    assert v.render({"context": '<a> & "b"'}).user == '&lt;a&gt; &amp; &quot;b&quot; | <a> & "b" | <a> & "b"'


@pytest.mark.parametrize("fmt, text", [
    ("f-string", "Q: {question} C: {context}"),
    ("mustache", "Q: {{question}} C: {{context}}"),
    ("jinja2", "Q: {{ question }} C: {{ context }}"),
])
def test_missing_variable_is_named(fmt, text):
    v = PromptVariant("B", text, format=fmt)
    with pytest.raises(TemplateError) as err:
        v.render({"question": "why?"})
    msg = str(err.value)
    assert "Template B needs 'context'" in msg and "it gives 'question'" in msg


def test_unknown_variable_is_named_and_can_be_ignored():
    v = PromptVariant("A", "Q: {question}")
    with pytest.raises(TemplateError, match=r"was given 'colour', which it does not use \(it uses 'question'\)"):
        v.render({"question": "q", "colour": "red"})
    assert v.render({"question": "q", "colour": "red"}, extra="ignore").user == "Q: q"


def test_check_columns_names_missing_and_unknown_columns():
    a = PromptVariant("A", "Q: {question}")
    b = PromptVariant("B", "Q: {questoin} (with {context})")
    check_columns([a], ["question"])  # fine
    with pytest.raises(TemplateError) as err:
        check_columns([a, b], ["question", "id"])
    msg = str(err.value)
    assert "Template B uses 'questoin', 'context', which the inputs have no column for" in msg
    assert "input column(s) 'id' are used by no template" in msg
    assert all_variables([a, b]) == ("question", "questoin", "context")


@pytest.mark.parametrize("fmt, text, fragment", [
    ("f-string", "Q: {question", "not a valid f-string template"),
    ("f-string", "Q: {question.upper}", "cannot contain attribute access"),
    ("f-string", "Q: {}", "empty {} placeholder"),
    ("mustache", "{{#items}} unclosed", "not a valid mustache template"),
    ("jinja2", "{% if %}", "not a valid jinja2 template (line 1)"),
    ("jinja2", "{{ question ", "not a valid jinja2 template"),
    ("yaml", "{question}", "not one of f-string, mustache, jinja2"),
])
def test_invalid_templates_are_template_errors(fmt, text, fragment):
    with pytest.raises(TemplateError) as err:
        PromptVariant("A", text, format=fmt).variables
    assert fragment in str(err.value)


def test_empty_template_is_refused():
    with pytest.raises(TemplateError, match="Template A is empty"):
        PromptVariant("A", "   ").variables


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",  # the sandbox alone would print this as an empty string
    "{{ question.__class__.__base__.__subclasses__() }}",
    "{{ question|attr('__class__') }}",
    "{{ question['__class__'] }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ cycler.__init__.__globals__ }}",
])
def test_jinja2_sandbox_refuses_python_internals(text):
    v = PromptVariant("J", text, system="", format="jinja2")
    with pytest.raises(TemplateError, match="tries to reach Python internals"):
        v.render({"question": "hi"}, extra="ignore")


def test_jinja2_sandbox_blocks_internals_reached_dynamically():
    # the attribute name is built at render time, so only the sandbox itself can stop it
    leak = "{% set n = '_' ~ '_class__' %}{{ (question|attr(n)).mro() }}"
    with pytest.raises(TemplateError, match="stopped by the jinja2 sandbox"):
        PromptVariant("J", leak, format="jinja2").render({"question": "hi"})
    quiet = "{% set n = '_' ~ '_class__' %}[{{ question|attr(n) }}][{{ question[n] }}]"
    out = PromptVariant("J", quiet, format="jinja2").render({"question": "hi"}).user
    assert out == "[][]"  # blocked: nothing of str's class leaks into the prompt
    assert "class" not in out


def test_jinja2_ordinary_features_still_work():
    v = PromptVariant("J", "{% for d in docs %}[{{ loop.index }}] {{ d | trim }}\n{% endfor %}Q: {{ q | upper }}",
                      format="jinja2")
    assert v.variables == ("docs", "q")
    assert v.render({"docs": [" a ", "b"], "q": "why"}).user == "[1] a\n[2] b\nQ: WHY"


def test_langchain_chat_template_is_what_renders():
    from langchain_core.prompts import ChatPromptTemplate

    v = PromptVariant("A", "Q: {q}", system="Be {tone}.")
    assert isinstance(v.chat_template, ChatPromptTemplate)
    assert sorted(v.chat_template.input_variables) == ["q", "tone"]

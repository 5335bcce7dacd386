"""Constrained decoding on the real bundled models: answers under a JSON schema parse and
validate (checked by `jsonschema`, not by the mask), forbidden tokens get exactly 0, regexes and
choices hold on both tokenizers and on llama.cpp, bad constraints are refused with a clear
message, and the Next token and Compare pages apply them."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

from playground import constrain as con
from playground import generate as gen
from playground.errors import InputError
from playground.sampling import SamplingSettings, probs
from playground.stepping import eos_ids
from tests.conftest import app_test, screenshot, texts, wait_idle

SMALL_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                                                 "tag": {"type": "string"}},
                "required": ["n", "ok", "tag"], "additionalProperties": False}


def _sample_batch(lm, prompt: str, grammar, seeds, sampling) -> list[list[int]]:
    """len(seeds) constrained answers in one batch (a KV cache, one model call per step), each row
    drawn by its own `Guide.choose` with its own seeded generator: the code the llama.cpp stream and
    generate's logits processor run, without 50 separate generate calls on a shared machine."""
    B = len(seeds)
    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids  # (1, T)
    with torch.no_grad():
        out = lm.model(input_ids=ids, use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(B)
    logits = out.logits[:, -1].float().expand(B, -1)  # (B, V)
    guides = [con.Guide(grammar) for _ in seeds]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    answers: list[list[int]] = [[] for _ in seeds]
    done = [False] * B
    for step in range(grammar.budget):
        nxt = []
        for b in range(B):
            if done[b]:
                nxt.append(min(grammar.eos_ids))
                continue
            t = guides[b].choose(logits[b], gens[b], sampling)
            answers[b].append(t)
            done[b] = t in grammar.eos_ids
            nxt.append(t)
        if all(done):
            break
        with torch.no_grad():
            out = lm.model(input_ids=torch.tensor(nxt)[:, None], past_key_values=cache, use_cache=True,
                           attention_mask=torch.ones(B, ids.shape[1] + step + 1, dtype=torch.long))
        cache, logits = out.past_key_values, out.logits[:, -1].float()
    return answers


def test_fifty_sampled_generations_under_a_schema_all_parse_and_validate(smollm2):
    """Hot sampling, a short budget, an unbounded string and integer: only the witness guard stops
    the answers from being cut in the middle, so some of them end exactly at the budget."""
    spec = con.parse("json", json.dumps(SMALL_SCHEMA))
    budget = 24  # the shortest answer the guard finds is 18 tokens with its end
    g = con.compile_for(spec, smollm2.tokenizer, sorted(eos_ids(smollm2)), budget)
    answers = _sample_batch(smollm2, "Give me a JSON record:", g, range(50), SamplingSettings(temperature=1.6))
    eos = g.eos_ids
    texts_seen = set()
    for a in answers:
        assert a[-1] in eos and len(a) <= budget, a  # every answer ended, within the budget
        text = smollm2.tokenizer.decode(a[:-1])
        jsonschema.validate(json.loads(text), SMALL_SCHEMA)  # parses, and validates by jsonschema itself
        texts_seen.add(text)
    assert len(texts_seen) > 25  # sampled: the seeds give different answers
    assert any(len(a) == budget for a in answers)  # some used the whole budget and were closed by the guard
    # and through the stream itself (generate's logits processor)
    for seed in range(1):
        r = gen.generate(smollm2, "Give me a JSON record.", gen.GenerationSettings(
            max_new_tokens=budget, temperature=1.6, seed=seed), constraint=spec, use_chat_template=False)
        jsonschema.validate(json.loads(r.text), SMALL_SCHEMA)
        assert r.finish_reason in ("end of turn", "end of sequence") and len(r.token_ids) <= budget


def test_forbidden_tokens_get_exactly_zero_and_the_mask_matches_an_independent_reading(smollm2, gemma):
    """The allowed set of `[a-z]{1,6}` at the start is every token whose piece is 1-6 lowercase
    letters (or the byte of one), read from the vocabulary itself; after the mask, every other token
    has probability 0."""
    for lm in (smollm2, gemma):
        tok = lm.tokenizer
        g = con.compile_for(con.parse("regex", "[a-z]{1,6}"), tok, sorted(eos_ids(lm)), 32)
        guide = con.Guide(g)
        allowed = guide.allowed(len(tok))
        pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
        # Gemma's byte-fallback pieces <0x61> are the byte "a" itself
        pieces = [chr(int(p[3:5], 16)) if re.fullmatch("<0x[0-9A-F]{2}>", p or "") else p for p in pieces]
        reference = torch.tensor([bool(re.fullmatch("[a-z]{1,6}", p or "")) for p in pieces])
        assert torch.equal(allowed, reference), lm.spec.id
        from playground.passes import next_token_distribution

        logits = next_token_distribution(lm, tok("The answer is", add_special_tokens=False).input_ids).logits
        p = probs(guide.mask(logits), SamplingSettings(temperature=1.3, top_p=0.9))  # (V,)
        assert bool((p[~allowed[: p.shape[0]]] == 0).all())
        assert abs(float(p.sum()) - 1.0) < 1e-5 and float(p[allowed[: p.shape[0]]].sum()) > 0.999


def test_regex_and_choices_hold_on_both_tokenizers_and_llama_cpp(smollm2, gemma):
    from playground.loading import load_causal_lm

    date = con.parse("regex", r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
    mood = con.parse("choices", "happy\nsad\nangry")
    llama = load_causal_lm("smollm2-135m-instruct:gguf")
    for lm in (smollm2, gemma, llama):
        for seed in (1,):
            s = gen.GenerationSettings(max_new_tokens=16, temperature=1.0, seed=seed)
            r = gen.generate(lm, "When was the moon landing?", s, constraint=date)
            assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r.text), (lm.spec.id, r.text)
            r = gen.generate(lm, "How do you feel today?", s, constraint=mood)
            assert r.text in ("happy", "sad", "angry"), (lm.spec.id, r.text)
            assert r.finish_reason in ("end of turn", "end of sequence")


def test_greedy_constrained_stream_equals_the_constrained_walk(smollm2):
    """The stream's greedy constrained answer equals the Next token page's greedy walk under the
    same constraint: two code paths (generate's logits processor; the page's view and take)."""
    from playground import stepping as stp

    spec = con.parse("json", json.dumps(SMALL_SCHEMA))
    r = gen.generate(smollm2, "A JSON record:", gen.GenerationSettings(max_new_tokens=24), constraint=spec,
                     use_chat_template=False)
    jsonschema.validate(json.loads(r.text), SMALL_SCHEMA)
    prompt = stp.make_prompt(smollm2.tokenizer, "A JSON record:", False)
    g = con.compile_for(spec, smollm2.tokenizer, sorted(eos_ids(smollm2)), 24)
    walk, cache = stp.Walk(smollm2.spec.id, prompt.ids), stp.LogitsCache(4)
    for _ in range(len(r.token_ids)):
        dist = cache.get(smollm2, walk.ids)
        guide = con.Guide(g, walk.token_ids)
        v = con.constrained_view(dist, SamplingSettings(temperature=0.0), smollm2.tokenizer, 10, guide)
        walk = con.constrained_take(walk, dist, smollm2.tokenizer, "greedy", SamplingSettings(temperature=0.0), guide)
        assert walk.steps[-1].token_id not in v.forbidden
    assert walk.token_ids == r.token_ids


@pytest.mark.parametrize("kind,text,words", [
    ("json", '{"type": "object", "properties": {', "not JSON"),
    ("json", '[1, 2]', "is an object"),
    ("json", '{"type": "strnig"}', "not a valid JSON schema"),
    ("json", '{"allOf": [{"type": "string"}, {"type": "integer"}]}', "Unsatisfiable"),
    ("json", '{"type": "string", "minLength": 500}', "cannot be completed within 32 tokens"),
    ("regex", "(ab", "unclosed group"),
    ("regex", "[a&&b]", "No text satisfies"),
    ("regex", "x" * 501, "at most 500 characters"),
    ("choices", "   \n  ", "empty"),
])
def test_a_bad_constraint_is_refused_with_a_clear_message(smollm2, kind, text, words):
    with pytest.raises(InputError, match=re.escape(words)):  # ConstraintError, or a LimitError for a size
        spec = con.parse(kind, text)
        gen.stream(smollm2, "Hello", gen.GenerationSettings(max_new_tokens=32), constraint=spec)


def test_answers_are_checked_independently_of_the_mask():
    spec = con.parse("json", json.dumps(SMALL_SCHEMA))
    assert con.check_answer(spec, '{"n": 1, "ok": true, "tag": "x"}').valid
    v = con.check_answer(spec, '{"n": 1, "ok": true}')
    assert v.parses and not v.valid and "tag" in v.detail
    assert not con.check_answer(spec, '{"n": 1,').parses
    assert not con.check_answer(con.parse("regex", "[0-9]+"), "12a").valid


# --- pages ---------------------------------------------------------------------------------

def test_next_token_page_constrains_the_bars_and_the_walk(smollm2):
    at = app_test("views/next_token.py")
    at.toggle(key="next_token_constrain_on").set_value(True).run()
    at.radio(key="next_token_constrain_kind").set_value("choices").run()
    at.text_area(key="next_token_constrain_text_choices").set_value(" little fox\n little owl\n big bear").run()
    assert not at.error, [e.value for e in at.error]
    shown = texts(at)
    assert "Constraint:" in shown and "of 49,152 tokens allowed" in shown
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    hatched = bars["marker"]["pattern"]["shape"]
    forbidden_rows = [h for h in bars["hovertext"] if "forbidden by the constraint" in h]
    assert hatched.count("/") == len(forbidden_rows) > 0  # forbidden bars are hatched and say so
    assert len(bars["y"]) > len(forbidden_rows)  # the most likely allowed tokens are shown below them
    for _ in range(3):
        at.button(key="next_token_step_greedy").click().run()
    walked = at.session_state["next_token_walk_obj"]
    text = smollm2.tokenizer.decode(list(walked.token_ids), skip_special_tokens=True)
    assert any(c.startswith(text) for c in (" little fox", " little owl", " big bear")), text
    # picking a token the constraint forbids is refused on the page, and the walk is kept
    forbidden = smollm2.tokenizer(" the", add_special_tokens=False).input_ids[0]
    at.session_state["next_token_action"] = ("picked", forbidden)
    at.run()
    assert any("forbidden by the constraint" in e.value for e in at.error)
    assert at.session_state["next_token_walk_obj"].token_ids == walked.token_ids
    # a broken schema: a clear message, the text box keeps what was typed
    at.radio(key="next_token_constrain_kind").set_value("json").run()
    at.text_area(key="next_token_constrain_text_json").set_value('{"type": ').run()
    assert any("not JSON" in e.value for e in at.error)
    assert at.text_area(key="next_token_constrain_text_json").value == '{"type": '


def test_a_link_carries_the_constraint(smollm2):
    at = app_test("views/next_token.py", query={"constrain": "true", "constrain_kind": "choices",
                                               "constrain_choices": " little fox\n big bear"})
    assert not at.error, [e.value for e in at.error]
    assert at.toggle(key="next_token_constrain_on").value is True
    assert at.text_area(key="next_token_constrain_text_choices").value == " little fox\n big bear"
    assert "of 49,152 tokens allowed" in texts(at)
    at.text_area(key="next_token_constrain_text_choices").set_value(" owl").run()
    assert at.query_params["constrain_choices"] in (" owl", [" owl"])
    at.toggle(key="next_token_constrain_on").set_value(False).run()
    assert "constrain" not in at.query_params and "constrain_choices" not in at.query_params
    bad = app_test("views/next_token.py", query={"constrain": "true", "constrain_kind": "lark"})
    assert not bad.exception and bad.radio(key="next_token_constrain_kind").value == "json"


def test_tool_call_example_on_the_next_token_page(smollm2):
    at = app_test("views/next_token.py")
    at.button(key="next_token_tool_run").click().run()
    assert not at.error, [e.value for e in at.error]
    shown = texts(at)
    assert "parses ✓ / validates ✓" in shown
    args = at.dataframe[0].value
    assert set(args["argument"]) == {"city", "unit"}


def test_compare_with_a_constraint_shows_parses_and_validates_under_each_answer(smollm2, gemma):
    at = app_test("views/compare.py")
    at.toggle(key="compare_constrain_on").set_value(True).run()
    at.number_input(key="compare_all_max_new_tokens").set_value(16).run()
    at.button(key="compare_run").click().run()
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.success] == ["parses ✓ / validates ✓"] * 2
    schema = json.loads(at.text_area(key="compare_constrain_text_json").value)
    for answer in [t.value for t in at.text][:2]:
        jsonschema.validate(json.loads(answer), schema)


@pytest.mark.browser
def test_constrained_walk_in_the_browser(app_url, page):
    page.goto(f"{app_url}/next_token")
    page.get_by_text("Constrain the next token").wait_for()
    wait_idle(page)
    page.get_by_text("Constrain the answer").first.click()
    wait_idle(page)
    page.get_by_text("One of a list").click()
    wait_idle(page)
    box = page.locator('textarea[aria-label^="Choices, one per line"]')
    box.fill(" little fox\n little owl\n big bear")
    box.press("Control+Enter")
    wait_idle(page)
    page.get_by_text("tokens allowed").wait_for()
    for _ in range(2):
        page.get_by_role("button", name="Greedy").click()
        wait_idle(page)
    page.get_by_text("2 tokens walked").wait_for()
    page.set_viewport_size({"width": 1400, "height": 1700})
    page.get_by_role("heading", name="Step through").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    screenshot(page, "next-token-constrained")
    assert "forbidden ones held" in page.inner_text("body")


def test_a_servers_model_is_refused_with_the_reason():
    from components.constrain import cannot_constrain
    from playground import engines
    from playground.registry import get_model

    remote, cpp = get_model("endpoint:e/m"), get_model("smollm2-135m-instruct:gguf")
    assert not remote.capabilities.can("constrained") and cpp.capabilities.can("constrained")
    assert "a server's model does not give them" in engines.why_not(remote, "constrained")
    assert cannot_constrain(["smollm2-135m-instruct", "smollm2-135m-instruct:gguf"]) is None
    assert "pick a transformers or llama.cpp entry" in cannot_constrain(["smollm2-135m-instruct", "endpoint:e/m"])

"""The Fine-tune lab: LoRA on SmolLM2 for real (a few tiny steps), checkpoints, resume, the tuned
catalogue entry on other pages, bad uploads, the page under AppTest and in Chromium.

The runs here are tiny (4 steps of 2 examples of at most 48 tokens) so that the whole file adds
well under a minute; they still train the real model with the real optimizer.
"""

from __future__ import annotations

import time

import pytest
import torch

from playground import finetune as ft
from playground import links, passes
from playground.errors import InputError, UnknownModelError
from playground.generate import format_prompt
from tests.conftest import ROOT, app_test, screenshot, texts, wait_idle

BASE = "smollm2-135m-instruct"
TINY = ft.LoraSettings(steps=4, batch_size=2, max_tokens=48, heldout_fraction=0.1, eval_every=2,
                       learning_rate=5e-3, threads=2)
PROMPT = "What is the capital of Italy?"


def _batch_loss(model, folder, step: int) -> float:
    """The loss of step `step`'s own batch under `model` (eval mode, no gradients)."""
    run, rows = ft.read_run(folder), ft.read_examples(folder)
    from playground.loading import load_tokenizer

    tok = load_tokenizer(BASE)
    enc = [ft.encode(tok, rows[i], TINY.max_tokens) for i in run["train"]]
    batch = [enc[i] for i in ft.batch_indices(len(enc), TINY.batch_size, step, TINY.seed)]
    ids, mask, labels = ft.collate(batch, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    model.eval()
    with torch.no_grad():
        return float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)


@pytest.fixture(scope="module")
def runs():
    """One unbroken 4-step run, and the same run stopped at step 2 and resumed to step 4."""
    ex = ft.bundled_examples()
    a = ft.create_run("t-unbroken", BASE, TINY, ex, replace=True)
    events: list[dict] = []
    unbroken = ft.train(a, on_event=events.append)
    b = ft.create_run("t-resumed", BASE, TINY, ex, replace=True)
    first = ft.train(b, stop_at=2)
    second = ft.train(b)
    return {"a": a, "unbroken": unbroken, "events": events, "b": b, "first": first, "second": second}


def test_a_few_steps_lower_the_loss_on_the_same_batch(runs):
    from playground.loading import load_causal_lm

    base = load_causal_lm(BASE).model  # a fresh copy: LoRA starts as the base (B = 0)
    before = _batch_loss(base, runs["a"], 1)
    after = _batch_loss(runs["unbroken"].model, runs["a"], 1)
    assert after < before - 0.2, (before, after)
    assert [s for s, _ in runs["unbroken"].train_loss] == [1, 2, 3, 4]
    assert [s for s, _ in runs["unbroken"].heldout_loss] == [0, 2, 4]
    held = [v for _, v in runs["unbroken"].heldout_loss]
    assert held[-1] < held[0], held  # pairs it never trained on: the habit generalises
    assert [e["step"] for e in runs["events"] if e["type"] == "step"] == [1, 2, 3, 4]


def test_stopped_and_resumed_run_continues_from_its_step(runs):
    first, second, unbroken = runs["first"], runs["second"], runs["unbroken"]
    assert first.stopped and first.step == 2 and not second.stopped and second.step == 4
    assert [s for s, _ in second.train_loss] == [1, 2, 3, 4]  # the step counter continued, history kept
    assert second.train_loss[:2] == first.train_loss
    # same batches, same adapter and optimizer state from the checkpoint: the losses of an unbroken run
    for (s1, l1), (s2, l2) in zip(second.train_loss, unbroken.train_loss):
        assert s1 == s2 and l1 == pytest.approx(l2, abs=1e-5), (s1, l1, l2)
    for (s1, l1), (s2, l2) in zip(second.heldout_loss, unbroken.heldout_loss):
        assert s1 == s2 and l1 == pytest.approx(l2, abs=1e-5)
    m = ft.manifest(runs["b"])
    assert m["step"] == 4 and m["state"] == "done" and m["data_sha256"] == ft.bundled_examples().digest
    assert m["settings"]["rank"] == TINY.rank and m["settings"]["target_modules"] == list(TINY.target_modules)
    files = {p.name for p in (runs["b"] / "checkpoint").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "manifest.json"} <= files
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in files)
    with pytest.raises(InputError, match="finished its 4 steps"):
        ft.start("t-resumed", resume=True)


def test_saved_adapter_reloads_with_identical_logits(runs):
    from peft import PeftModel

    from playground.loading import load_causal_lm

    lm = load_causal_lm(BASE)
    ids = lm.tokenizer(format_prompt(lm.tokenizer, PROMPT), return_tensors="pt", add_special_tokens=False).input_ids
    trained = runs["unbroken"].model
    with torch.no_grad():
        want = trained(input_ids=ids).logits  # (1, T, V)
        reloaded = PeftModel.from_pretrained(lm.model, str(runs["a"] / "checkpoint"))
        reloaded.eval()
        got = reloaded(input_ids=ids).logits
    assert torch.equal(got, want)
    # the catalogue entry merges the adapter into the weights: the same function up to float rounding
    tuned = load_causal_lm("lora:t-unbroken")
    with torch.no_grad():
        merged = tuned.model(input_ids=ids).logits
    assert float((merged - want).abs().max()) < 2e-4


def test_tuned_entry_differs_from_its_base_and_joins_the_catalogue(runs, smollm2):
    from playground.loading import load_causal_lm
    from playground.registry import get_model, list_models, variants

    spec = get_model("lora:t-unbroken")
    assert spec.base_id == BASE and spec.adapter == "t-unbroken" and spec.engine == "transformers"
    assert "lora:t-unbroken" in [s.id for s in list_models()]
    assert [s.id for s in variants("lora:t-unbroken")] == ["lora:t-unbroken"]
    tuned = load_causal_lm("lora:t-unbroken")
    ids = smollm2.tokenizer(format_prompt(smollm2.tokenizer, PROMPT), add_special_tokens=False).input_ids
    p = passes.next_token_distribution(smollm2, ids).probs()
    q = passes.next_token_distribution(tuned, ids).probs()
    assert float((p - q).abs().max()) > 1e-3
    ah = smollm2.tokenizer("Ahoy", add_special_tokens=False).input_ids[0]
    assert float(q[ah]) > float(p[ah]) * 2, (float(p[ah]), float(q[ah]))  # the pirate opening got likelier
    # link checks: the tuned id is a model that generates and shows its distribution; bad ones are said
    assert links.read("model_a", "lora:t-unbroken", links.Model("generate", engine="full_distribution"), BASE).note is None
    note = links.read("model_a", "lora:nope", links.Model("generate"), BASE).note
    assert "no saved fine-tuned model named 'nope'" in note and BASE in note
    with pytest.raises(UnknownModelError, match="lora:<run name>"):
        get_model("lora:../../etc")


@pytest.mark.parametrize("name, data, says", [
    ("pairs.csv", b"question_text,reply\nHi,Hello\n", "needs a prompt column and a response column; it has 'question_text', 'reply'"),
    ("pairs.jsonl", b'{"q": "Hi", "a": "Hello"}\n', "needs a prompt column and a response column; it has 'q', 'a'"),
    ("pairs.csv", b"", "is empty (0 bytes)"),
    ("pairs.csv", b"prompt,response\n", "has 0 usable prompt/response pair(s)"),
    ("pairs.csv", b"prompt,response\nHi,Hello\n,empty prompt\nYo,\n", "has 1 usable prompt/response pair(s); a training needs at least 2"),
    ("pairs.jsonl", b'{"prompt": "Hi", "response": "Hello"}\nnot json\n', "line 2, is not JSON"),
    ("pairs.jsonl", b'["Hi", "Hello"]\n', "is a JSON list, not an object"),
    ("pairs.xlsx", b"PK\x03\x04rest", "does not look like text: it is a ZIP archive"),
    ("pairs.txt", b"prompt,response\nHi,Hello\n", "is neither CSV nor JSONL"),
])
def test_bad_uploads_say_what_is_wrong(name, data, says):
    with pytest.raises(InputError) as err:
        ft.parse_examples(data, name)
    assert says in str(err.value) and name in str(err.value)


def test_good_upload_with_other_column_names_and_an_empty_row():
    ex = ft.parse_examples(b"Instruction,Output,extra\nHi,Hello,x\nBye,\nSky?,Blue.,y\n", "mine.csv")
    assert [(r.prompt, r.response) for r in ex.rows] == [("Hi", "Hello"), ("Sky?", "Blue.")]
    assert ex.notes == ("1 row(s) with an empty prompt or response were left out (line 3).",)
    assert len(ex.digest) == 64 and ex.digest != ft.bundled_examples().digest


def test_page_upload_bad_then_good_pairs():
    at = app_test("views/finetune.py", query={"data": "upload"})
    assert not at.exception, at.exception
    assert any("Upload a CSV or JSONL file" in i.value for i in at.info)
    at.file_uploader(key="finetune_upload").set_value(("mine.csv", b"question_text,reply\nHi,Hello\n", "text/csv")).run()
    assert not at.exception
    assert any("mine.csv needs a prompt column and a response column" in e.value for e in at.error)
    assert at.radio(key="finetune_source").value == "upload"  # the choice is kept
    good = b"prompt,response\nHi,Ahoy! Hello.\nSky?,Ahoy! Blue.\nSea?,\nTea?,Ahoy! Hot.\n"
    at.file_uploader(key="finetune_upload").set_value(("mine.csv", good, "text/csv")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = texts(at)
    assert "3 pairs from mine.csv" in shown and "1 row(s) with an empty prompt or response were left out" in shown
    assert at.text_input(key="finetune_name").value == "mine"  # the run is named after the file


def test_page_starts_shows_progress_and_stops_a_run():
    at = app_test("views/finetune.py", query={"steps": "300", "batch_size": "1", "max_tokens": "32",
                                             "eval_every": "50", "heldout_fraction": "0.05"})
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = texts(at)
    assert "Estimated time" in shown and "Estimated memory" in shown and "calibrated" in shown
    assert sorted(at.multiselect(key="finetune_targets").options) == sorted(ft.linear_modules_of(BASE))
    at.text_input(key="finetune_name").set_value("t-page")
    at.button(key="finetune_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="finetune_run").value == "t-page"
    try:
        at.switch_page(str(ROOT / "views/home.py")).run()  # the run outlives the page and its widgets
        at.switch_page(str(ROOT / "views/finetune.py")).run()
        assert at.selectbox(key="finetune_run").value == "t-page" and ft.status("t-page").active
        with pytest.raises(ft.TrainingBusyError, match="one at a time"):  # a second training is refused
            ft.start("t-second", BASE, TINY, ft.bundled_examples())
        status_page = app_test("views/status.py")  # whoever runs the demo sees the training
        assert "Fine-tune: the run 't-page' is training in a process of its own" in texts(status_page)
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(1.0)
            at.run()
            if ft.status("t-page").step >= 2:
                break
        s = ft.status("t-page")
        assert s.state == "running" and s.step >= 2, s
        fig = at.get("plotly_chart")[0].proto.spec
        assert "training (each step" in fig and "held-out" in fig  # the curve, both series
        assert any(m.label == "Step" and m.value.endswith("/ 300") for m in at.metric)
        at.button(key="finetune_stop").click().run()
    finally:
        ft.stop("t-page")
        ft.wait("t-page", timeout=120)
    at.run()
    s = ft.status("t-page")
    assert s.state == "stopped" and s.saved_step == s.step >= 2, s
    assert "stopped (resumable)" in "\n".join(str(p.proto) for p in at.get("progress"))
    assert at.button(key="finetune_resume").label == "Resume"
    assert "lora:t-page" in texts(at)  # the catalogue section


def test_tuned_entry_on_the_next_token_attention_and_prompt_ab_pages(runs):
    at = app_test("views/next_token.py", query={"model_a": "lora:t-unbroken", "model_b": BASE, "chat": "true",
                                               "prompt": PROMPT})
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="next_token_model").value == "lora:t-unbroken"
    assert at.selectbox(key="next_token_model2").value == BASE
    assert not at.warning or "link asked" not in " ".join(w.value for w in at.warning)
    shown = texts(at)
    assert "LoRA t-unbroken" in shown or "lora:t-unbroken" in shown
    tops = [m.value for m in at.metric if m.label == "Top token"]
    assert len(tops) == 2 and tops[0] != tops[1], tops
    # and on the Attention page, beside its base
    at = app_test("views/attention.py", query={"model_a": "lora:t-unbroken", "model_b": BASE, "text": PROMPT})
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="attention_model").value == "lora:t-unbroken"
    # picked in the sidebar: its facts are its base's architecture, under its own name
    at = app_test(None, query={"model": "lora:t-unbroken"})
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="model_id").value == "lora:t-unbroken"
    assert "fine-tuned with LoRA (rank 8, alpha 16, q_proj, v_proj) for 4 steps" in texts(at)
    # and among Prompt A/B's models, to run beside its base
    at = app_test("views/prompt_ab.py")
    assert not at.exception, at.exception
    assert any("LoRA t-unbroken" in o for o in at.multiselect(key="ab_models").options)


@pytest.mark.browser
def test_finetune_page_in_chromium(runs, app_url, page):
    page.goto(f"{app_url}/finetune?run=t-unbroken")
    page.get_by_role("heading", name="Fine-tune").first.wait_for()
    page.get_by_text("4 / 4").first.wait_for()
    wait_idle(page)
    box = page.locator("textarea[aria-label='Prompts, one a line']")
    box.fill("What is the capital of Italy?\nHow do I make a cup of tea?")
    box.press("Control+Enter")  # Streamlit takes a text area's value on Ctrl+Enter or blur
    wait_idle(page)
    page.get_by_role("button", name="Compare base and tuned").click()
    page.get_by_text("After: tuned, step 4").first.wait_for(timeout=180_000)
    page.get_by_text("lora:t-unbroken").first.wait_for()
    wait_idle(page)
    page.mouse.move(5, 5)
    page.set_viewport_size({"width": 1400, "height": 3200})
    wait_idle(page)
    page.wait_for_timeout(800)
    screenshot(page, "finetune")

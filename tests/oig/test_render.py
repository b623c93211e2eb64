import json
from pathlib import Path

import pytest
import yaml

from oig.render import TEMPLATES_DIR, Template, TemplateSpecError, chat_turns
from oig.sources import iter_records

QA_SPEC = {
    "constituent": "qa",
    "group_by": "context",
    "max_turns": 2,
    "context": "{{ context }}",
    "placement": ["before", "after"],
    "instructions": ["Answer from the text.", "Use the passage.", "Read and answer."],
    "turns": [
        {
            "human": ["{{ question }}"],
            "bot": ["{{ answer }}", "It says: {{ answer }}"],
            "unanswerable": {"when": "not answer", "refusals": ["The text does not say.", "Not in the passage."]},
        }
    ],
}


def template(spec, tmp_path, name="t.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return Template.load(str(path))


def qa_records(n_contexts=1, per_context=5):
    return [
        {"context": f"Passage {c} about topic {c}.", "question": f"Question {c}.{i}?", "answer": f"answer {c}.{i}" if i != 1 else None}
        for c in range(n_contexts)
        for i in range(per_context)
    ]


def test_multi_turn_packing_respects_the_turn_cap(tmp_path):
    conversations = list(template(QA_SPEC, tmp_path).render(qa_records(1, 5), seed=0))
    assert [len(c.messages) // 2 for c in conversations] == [2, 2, 1]
    for conversation in conversations:
        # the shared context opens each conversation once; later human turns are just the question
        assert "Passage 0 about topic 0." in conversation.messages[0]["content"]
        assert all("Passage" not in m["content"] for m in conversation.messages[1:])
        assert conversation.text.startswith("<human>: ") and "\n<bot>: " in conversation.text


def test_unanswerable_questions_get_a_refusal_from_the_pool(tmp_path):
    first = next(template(QA_SPEC, tmp_path).render(qa_records(1, 2), seed=0))
    assert first.messages[1]["content"] in ("answer 0.0", "It says: answer 0.0")
    assert first.messages[3]["content"] in ("The text does not say.", "Not in the passage.")
    assert first.template_id.split("/")[-1].startswith("h0r")


def test_paraphrase_pool_placement_and_augmentations_all_used(tmp_path):
    spec = dict(QA_SPEC, max_turns=1)
    conversations = list(template(spec, tmp_path).render(qa_records(40, 1), seed=3))
    instructions = {c.template_id.split("/")[1] for c in conversations}
    assert {i.split("-")[1] for i in instructions} == {"before", "after"}
    assert {i.split("-")[0] for i in instructions} == {"i0", "i1", "i2"}
    bots = {c.messages[1]["content"].startswith("It says:") for c in conversations}
    assert bots == {True, False}
    after = next(c for c in conversations if "after" in c.template_id)
    assert after.messages[0]["content"].startswith("Passage")


def test_rendering_is_seeded_and_independent_of_what_came_before(tmp_path):
    t = template(dict(QA_SPEC, max_turns=1), tmp_path)
    records = qa_records(10, 1)
    once = [c.text for c in t.render(records, seed=7)]
    assert once == [c.text for c in t.render(records, seed=7)]
    assert [c.text for c in t.render(records[5:], seed=7)] == once[5:]
    assert once != [c.text for c in t.render(records, seed=8)]


def test_follow_up_turn_only_when_its_field_is_present():
    t = Template.load("summarization")
    with_headline = {"article": "A long article text.", "summary": "Short.", "headline": "Title"}
    without = dict(with_headline, headline="")
    two, one = list(t.render([with_headline, without], seed=0))
    assert len(two.messages) == 4 and "Title" in two.messages[3]["content"]
    assert len(one.messages) == 2


def test_dialogue_turns_are_cut_at_the_cap(tmp_path):
    spec = {"constituent": "d", "max_turns": 2, "context": "{{ situation }}", "turns": [{"dialogue": "utterances"}]}
    record = {"situation": "Two friends.", "utterances": [f"u{i}" for i in range(7)]}
    (conversation,) = template(spec, tmp_path).render([record], seed=0)
    assert [m["content"] for m in conversation.messages] == ["Two friends.\n\nu0", "u1", "u2", "u3"]


def test_every_shipped_template_renders_its_sample_source():
    recipe = yaml.safe_load((TEMPLATES_DIR.parent / "recipes" / "sample.yaml").read_text())
    base = TEMPLATES_DIR.parent / "recipes"
    names = []
    for entry in recipe["constituents"]:
        t = Template.load(entry.get("template", entry["name"]))
        conversations = list(t.render(iter_records(entry["source"], base), seed=1))
        assert conversations and all(c.messages[-1]["role"] == "assistant" for c in conversations)
        names.append(t.name)
    assert len(names) >= 6


def test_template_errors_name_the_file(tmp_path):
    with pytest.raises(TemplateSpecError, match=r"bad\.yaml: `turns` must be a non-empty list"):
        template({"constituent": "x"}, tmp_path, "bad.yaml")
    broken = template({"turns": [{"human": "{{ question }}", "bot": "{{ missing_field }}"}]}, tmp_path, "b.yaml")
    with pytest.raises(TemplateSpecError, match=r"b\.yaml: turns\[0\]\.bot\[0\]: 'missing_field' is undefined"):
        list(broken.render([{"question": "q"}], seed=0))
    with pytest.raises(TemplateSpecError, match="cannot read"):
        Template.load(str(Path(tmp_path) / "absent.yaml"))


CHAT = {"constituent": "chat", "turns": [{"messages": "messages"}]}


def test_chat_messages_become_turns_as_they_are(tmp_path, shared_dir):
    """The role/content form of the real sft_chat.jsonl maps onto our messages one for one."""
    path = shared_dir / "data" / "real" / "sft_chat.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    records = list(iter_records({"path": str(path)}))
    conversations = list(template(CHAT, tmp_path).render(records, seed=0))
    assert len(conversations) == 32
    assert [c.messages for c in conversations] == [r["messages"] for r in records]
    assert conversations[2].text == "<human>: What is the capital of France?\n<bot>: The capital of France is Paris."


def test_chat_roles_system_prompts_and_repeated_roles():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "human", "content": "Hi."},
        {"role": "user", "content": "Name a colour."},
        {"role": "gpt", "content": "Blue."},
        {"role": "user", "content": "Another?"},
    ]
    assert chat_turns(messages, "m") == [("Be brief.\n\nHi.\n\nName a colour.", "Blue."), ("Another?", "")]
    with pytest.raises(TemplateSpecError, match=r"m\[1\]: unknown role 'tool'"):
        chat_turns([{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"}], "m")
    with pytest.raises(TemplateSpecError, match="starts with an assistant message"):
        chat_turns([{"role": "assistant", "content": "x"}], "m")


def test_unknown_role_names_the_file_and_line(tmp_path):
    lines = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
             {"messages": [{"role": "user", "content": "a"}, {"role": "function", "content": "b"}]}]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    chat = template(CHAT, tmp_path)
    with pytest.raises(TemplateSpecError, match=r"chat\.jsonl:2: `?messages\[1\]: unknown role 'function'"):
        list(chat.render(iter_records({"path": "chat.jsonl"}, tmp_path), seed=0))


def test_a_template_rendering_a_python_repr_is_an_error_not_a_row(tmp_path):
    """The shipped dialogue template over role/content data used to make rows of "{'role': 'user', ...}"."""
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps({"situation": "s", "utterances": record["messages"]}) + "\n", encoding="utf-8")
    with pytest.raises(TemplateSpecError, match=r"chat\.jsonl:1: `dialogue: utterances` needs a list of strings; .*`messages: utterances`"):
        list(Template.load("dialogue").render(iter_records({"path": "chat.jsonl"}, tmp_path), seed=0))
    whole = template({"turns": [{"human": "{{ messages }}", "bot": "ok"}]}, tmp_path, "whole.yaml")
    with pytest.raises(TemplateSpecError, match=r"chat\.jsonl:1: .*whole\.yaml: turns\[0\]\.human\[0\]: a template value rendered a list"):
        list(whole.render(iter_records({"path": "chat.jsonl", "fields": {"messages": "utterances"}}, tmp_path), seed=0))
    one = template({"turns": [{"human": "{{ m }}", "bot": "ok"}]}, tmp_path, "one.yaml")
    with pytest.raises(TemplateSpecError, match="rendered a dict"):
        list(one.render([{"m": record["messages"][0]}], seed=0))
    with pytest.raises(TemplateSpecError, match="rendered None"):
        list(one.render([{"m": None}], seed=0))

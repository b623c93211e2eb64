import pytest
import yaml

from oig.moderation import LABELS, ModerationTemplate
from oig.render import TemplateSpecError


def test_shipped_template_maps_severity_to_oig_labels_with_tags():
    template = ModerationTemplate.load("moderation")
    records = [
        {"prompt": "Banana bread recipe?", "label": 0, "tags": []},
        {"prompt": "I feel low.", "label": 2, "tags": ["mental health"]},
        {"prompt": "Where does my ex live?", "label": 3, "tags": ["privacy"]},
        {"prompt": "I want to hurt myself.", "label": 4, "tags": "self-harm"},
    ]
    out = list(template.render(records))
    assert [label for _, label, _ in out] == [LABELS[0], LABELS[2], LABELS[3], LABELS[4]]
    assert [tags for _, _, tags in out] == [[], ["mental health"], ["privacy", "unsafe"], ["self-harm", "unsafe", "urgent"]]
    conversation = out[3][0]
    assert conversation.text == "<human>: I want to hurt myself.\n<bot>: needs intervention, self-harm, unsafe, urgent"


def test_string_labels_and_unknown_labels(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"labels": {"safe": "casual", "toxic": "needs caution"}}), encoding="utf-8")
    template = ModerationTemplate.load(str(path))
    (_, label, _), = template.render([{"prompt": "p", "label": "toxic"}])
    assert label == "needs caution"
    with pytest.raises(TemplateSpecError, match="record: label 'spam' is not mapped"):
        list(template.render([{"prompt": "p", "label": "spam"}]))
    path.write_text(yaml.safe_dump({"labels": {"0": "fine"}}), encoding="utf-8")
    with pytest.raises(TemplateSpecError, match="not OIG-moderation labels: \\['fine'\\]"):
        ModerationTemplate.load(str(path))

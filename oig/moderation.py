"""OIG-moderation: labelled safety prompts as conversations whose bot turn is the moderation label.

OIG-moderation labelled prompts casual / possibly needs caution / probably
needs caution / needs caution / needs intervention, with extra tags. A
moderation template (``templates/moderation.yaml``) maps a source's own labels
(a 0-4 severity, or its label strings) onto those five, and may add tags by
severity; the source's categories become tags too. The bot turn reads
``"<label>"`` or ``"<label>, <tag>, <tag>"``, and the label and tags are also in
``metadata.moderation_label`` / ``moderation_tags``: the moderation config has
the same schema as every other config.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from oig.render import Conversation, TemplateSpecError, load_yaml, template_path
from oig.schema import ASSISTANT_ROLE, USER_ROLE

LABELS = ("casual", "possibly needs caution", "probably needs caution", "needs caution", "needs intervention")


class ModerationTemplate:
    """Label mapping of one safety source; :meth:`render` makes labelled conversations."""

    def __init__(self, spec: Mapping[str, Any], path: Path):
        self.path = path
        self.name = str(spec.get("constituent", "moderation"))
        self.description = str(spec.get("description", ""))
        mapping = spec.get("labels")
        if not isinstance(mapping, Mapping) or not mapping:
            raise TemplateSpecError(f"{path}: `labels` must map source labels to OIG-moderation labels")
        self.labels = {str(k): str(v) for k, v in mapping.items()}
        unknown = sorted(set(self.labels.values()) - set(LABELS))
        if unknown:
            raise TemplateSpecError(f"{path}: not OIG-moderation labels: {unknown} (use {list(LABELS)})")
        self.severity_tags = {LABELS[int(k)]: list(v) for k, v in (spec.get("severity_tags") or {}).items()}

    @classmethod
    def load(cls, name_or_path: str, base_dir: Path | None = None) -> ModerationTemplate:
        path = template_path(name_or_path, base_dir)
        return cls(load_yaml(path), path)

    def label(self, record: Mapping[str, Any]) -> tuple[str, list[str]]:
        """The OIG-moderation label and tags of one record (fields ``prompt``, ``label``, optional ``tags``)."""
        raw = str(record.get("label"))
        if raw not in self.labels:
            raise TemplateSpecError(
                f"{getattr(record, 'where', 'record')}: label {raw!r} is not mapped by `labels` in {self.path} "
                f"(known: {sorted(self.labels)})"
            )
        label = self.labels[raw]
        tags = record.get("tags") or []
        tags = [tags] if isinstance(tags, str) else list(tags)
        for tag in self.severity_tags.get(label, []):
            if tag not in tags:
                tags.append(tag)
        return label, [str(t) for t in tags]

    def render(self, records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Conversation, str, list[str]]]:
        """(conversation, label, tags) per record; the bot turn is the label and its tags."""
        for record in records:
            label, tags = self.label(record)
            answer = ", ".join([label, *tags])
            messages = [
                {"role": USER_ROLE, "content": str(record.get("prompt") or "")},
                {"role": ASSISTANT_ROLE, "content": answer},
            ]
            yield Conversation(messages=messages, template_id=f"{self.name}/{LABELS.index(label)}"), label, tags

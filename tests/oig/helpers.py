"""Build working batches from plain conversations, for stage tests."""

from __future__ import annotations

from oig.schema import format_text, work_table


def conversation(*turns: str) -> list[dict[str, str]]:
    """Messages alternating user / assistant."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def batch(conversations: list[list[dict[str, str]]], constituent: str = "test", start: int = 0):
    return work_table(
        [
            {
                "id": f"{constituent}-{start + i:08d}",
                "text": format_text(messages),
                "messages": messages,
                "source": "test",
                "constituent": constituent,
                "template_id": "t",
                "seed": 0,
                "flags": [],
                "pii_replaced": 0,
                "moderation_label": None,
                "moderation_tags": [],
            }
            for i, messages in enumerate(conversations)
        ]
    )

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


def deduplicate(scope, name: str, batches: list):
    """Run one constituent's batches through a dedup scope as the builder does: sign, index, resolve, mark, commit."""
    from oig.dedup import DEDUP_KEY, MINHASH, DuplicateMarker

    index = scope.open(name)
    signed = [scope.signer(b) for b in batches]
    for signed_batch in signed:
        index.add(signed_batch)
    decisions = index.resolve()
    marker = DuplicateMarker(decisions, scope, index)
    marked = [marker(b.drop_columns([MINHASH, DEDUP_KEY])) for b in signed]
    index.commit(decisions)
    return marked

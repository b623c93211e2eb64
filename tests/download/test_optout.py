"""Header opt-outs: X-Robots-Tag directives (noml included, scoped to our tokens) and TDMRep's tdm-reservation."""

from __future__ import annotations

from email.message import Message

import pytest

from laion_hf.download.agents import AI_AGENT_TOKENS, OUR_TOKEN
from laion_hf.download.optout import OPT_OUT_MESSAGE, HeaderOptOut

TOKENS = (OUR_TOKEN, *AI_AGENT_TOKENS)


def headers(*pairs: tuple[str, str]) -> Message:
    message = Message()
    for name, value in pairs:
        message[name] = value
    return message


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (["noml"], "x-robots-tag:noml"),
        (["noai"], "x-robots-tag:noai"),
        (["nofollow, NoImageAI"], "x-robots-tag:noimageai"),
        (["GPTBot: noai"], "x-robots-tag:noai"),  # scoped to an AI crawler we answer for
        (["laion-hf: noml"], "x-robots-tag:noml"),
        (["otherbot: noai"], None),
        (["nofollow"], None),
    ],
)
def test_x_robots_tag(values, reason):
    found = HeaderOptOut(tokens=TOKENS).reason(headers(*(("X-Robots-Tag", v) for v in values)))
    assert (found[0] if found else None) == reason
    if found:
        assert found[1] == f"{OPT_OUT_MESSAGE}: X-Robots-Tag: {', '.join(values)}"


def test_a_configured_directive_list_replaces_the_default():
    custom = HeaderOptOut(directives=["notrain"], tokens=TOKENS)
    assert custom.reason(headers(("X-Robots-Tag", "notrain")))[0] == "x-robots-tag:notrain"
    assert custom.reason(headers(("X-Robots-Tag", "noai"))) is None
    assert HeaderOptOut(directives=[]).reason(headers(("X-Robots-Tag", "noai"))) is None


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("tdm-reservation", "1")], ("tdm-reservation", "TDM rights reserved by header tdm-reservation: 1")),
        ([("tdm-reservation", " 1 "), ("tdm-policy", "https://x.example/policy.json")],
         ("tdm-reservation", "TDM rights reserved by header tdm-reservation: 1 (tdm-policy: https://x.example/policy.json)")),
        ([("tdm-reservation", "0"), ("tdm-policy", "https://x.example/policy.json")], None),
        ([("tdm-reservation", "yes")], None),
        ([], None),
    ],
)
def test_tdm_reservation_header(pairs, expected):
    assert HeaderOptOut(tdm_reservation=True).reason(headers(*pairs)) == expected
    assert HeaderOptOut(tdm_reservation=False).reason(headers(*pairs)) is None

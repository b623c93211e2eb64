"""robots.txt rules as a download reads them: RFC 9309 matching through Protego, our tokens, what a failed fetch means."""

from __future__ import annotations

import pytest

from laion_hf.download.agents import AI_AGENT_TOKENS, OUR_TOKEN
from laion_hf.download.robots import ROBOTS_TXT, ROBOTS_TXT_UNREACHABLE, RobotsRules, robots_state
from laion_hf.download.sites import ABSENT, FOUND, UNREACHABLE, SiteFile

ORIGIN = "http://images.example:80"
TOKENS = (OUR_TOKEN, *AI_AGENT_TOKENS)


def rules(text: str, tokens=TOKENS) -> RobotsRules:
    return RobotsRules(SiteFile(ORIGIN + "/robots.txt", FOUND, 200, text, "ab" * 32, 0.0), tokens)


def judged(text: str, path: str, tokens=TOKENS):
    return rules(text, tokens).verdict(ORIGIN + path)


@pytest.mark.parametrize(
    ("text", "path", "allowed"),
    [
        # plain prefix rules for every agent
        ("User-agent: *\nDisallow: /private/", "/private/a.jpg", False),
        ("User-agent: *\nDisallow: /private/", "/public/a.jpg", True),
        ("User-agent: *\nDisallow:", "/anything.jpg", True),  # an empty Disallow allows all
        ("", "/anything.jpg", True),
        # wildcards and the end anchor
        ("User-agent: *\nDisallow: /*.png$", "/img/a.png", False),
        ("User-agent: *\nDisallow: /*.png$", "/img/a.png?size=2", True),
        ("User-agent: *\nDisallow: /*.png$", "/img/a.jpg", True),
        ("User-agent: *\nDisallow: /img/*/large/", "/img/2024/large/a.jpg", False),
        ("User-agent: *\nDisallow: /img/*/large/", "/img/large/a.jpg", True),
        # the longest match wins, Allow wins a tie
        ("User-agent: *\nDisallow: /img/\nAllow: /img/public/", "/img/public/a.jpg", True),
        ("User-agent: *\nDisallow: /img/\nAllow: /img/public/", "/img/secret/a.jpg", False),
        ("User-agent: *\nAllow: /img/public/\nDisallow: /img/public/raw/", "/img/public/raw/a.jpg", False),
        ("User-agent: *\nAllow: /img\nDisallow: /img", "/img/a.jpg", True),
        # paths compare after percent-decoding unreserved characters, case-sensitively
        ("User-agent: *\nDisallow: /%7Euser/", "/~user/a.jpg", False),
        ("User-agent: *\nDisallow: /Private/", "/private/a.jpg", True),
    ],
)
def test_rules_for_every_agent(text, path, allowed):
    assert (judged(text, path) is None) is allowed


@pytest.mark.parametrize(
    ("text", "tokens", "disallowed_for"),
    [
        # an AI crawler's own group opts the site out of dataset building
        ("User-agent: GPTBot\nDisallow: /\n\nUser-agent: *\nAllow: /", TOKENS, "GPTBot"),
        ("user-agent: ccbot\ndisallow: /", TOKENS, "CCBot"),  # tokens match case-insensitively
        ("User-agent: laion-hf\nDisallow: /", TOKENS, OUR_TOKEN),
        # several agents in one group
        ("User-agent: Googlebot\nUser-agent: Google-Extended\nDisallow: /", TOKENS, "Google-Extended"),
        # groups for the same agent are merged (RFC 9309 2.2.1)
        ("User-agent: ClaudeBot\nDisallow: /a/\n\nUser-agent: *\nAllow: /\n\nUser-agent: ClaudeBot\nDisallow: /img/",
         TOKENS, "ClaudeBot"),
        # without the AI tokens only our own token counts
        ("User-agent: GPTBot\nDisallow: /", (OUR_TOKEN,), None),
        # a token's own group replaces the * group for that token
        ("User-agent: *\nDisallow: /\n\nUser-agent: CCBot\nAllow: /", ("CCBot",), None),
        ("User-agent: *\nDisallow: /\n\nUser-agent: CCBot\nAllow: /", (OUR_TOKEN, "CCBot"), OUR_TOKEN),
        # a group for a longer name that merely contains a token does not apply to it
        ("User-agent: GPTBot-Beta\nDisallow: /", TOKENS, None),
        # a search engine's group is not ours
        ("User-agent: Googlebot\nDisallow: /", TOKENS, None),
    ],
)
def test_agent_groups(text, tokens, disallowed_for):
    verdict = judged(text, "/img/a.jpg", tokens)
    if disallowed_for is None:
        assert verdict is None
    else:
        assert verdict == (ROBOTS_TXT, f"{ORIGIN}/robots.txt (sha256 {'ab' * 32}) disallows it for user-agent {disallowed_for}")


@pytest.mark.parametrize(
    ("status", "reason", "state"),
    [
        (404, "http-404", ABSENT),
        (401, "http-401", ABSENT),
        (403, "http-403", ABSENT),  # RFC 9309 2.3.1.3: any 4xx = no robots.txt
        (410, "http-410", ABSENT),
        (429, "http-429", UNREACHABLE),  # a server asking to slow down is no permission
        (500, "http-500", UNREACHABLE),
        (503, "http-503", UNREACHABLE),
        (None, "timeout", UNREACHABLE),
        (None, "connection-refused", UNREACHABLE),
        (None, "dns-error", UNREACHABLE),
        (None, "too-many-redirects", ABSENT),  # RFC 9309 2.3.1.2
    ],
)
def test_what_a_failed_fetch_means(status, reason, state):
    assert robots_state(status, reason) == state


def test_an_unreachable_robots_txt_disallows_everything_and_an_absent_one_nothing():
    unreachable = SiteFile(ORIGIN + "/robots.txt", UNREACHABLE, 503, detail="http-503: HTTP Error 503: Service Unavailable")
    reason, evidence = RobotsRules(unreachable, TOKENS).verdict(ORIGIN + "/a.jpg")
    assert reason == ROBOTS_TXT_UNREACHABLE
    assert evidence.startswith(f"{ORIGIN}/robots.txt: http-503") and "RFC 9309" in evidence
    assert RobotsRules(SiteFile(ORIGIN + "/robots.txt", ABSENT, 404), TOKENS).verdict(ORIGIN + "/a.jpg") is None


def test_binary_garbage_is_no_rule():
    garbage = bytes(range(256)).decode("utf-8", errors="replace") * 100
    assert judged(garbage + "\nUser-agent: *\nDisallow: /x/", "/a.jpg") is None
    assert judged(garbage + "\nUser-agent: *\nDisallow: /x/", "/x/a.jpg")[0] == ROBOTS_TXT


@pytest.mark.parametrize(
    ("text", "asked"),
    [
        ("User-agent: *\nDisallow: /", (OUR_TOKEN,)),
        ("", (OUR_TOKEN,)),
        ("User-agent: GPTBot\nDisallow: /\nUser-agent: *\nAllow: /", (OUR_TOKEN, "GPTBot")),
        ("user-agent:gpt # comment\nDisallow: /", (OUR_TOKEN, "GPTBot")),  # a name inside a token: asked (conservative)
        ("User-agent: laion-hf\nUser-Agent: CCBot*\nDisallow: /", (OUR_TOKEN, "CCBot", "GPTBot")),
        ("User-agent: bot\nDisallow: /", (OUR_TOKEN, "CCBot")),  # CCBot and GPTBot share the names matching them
    ],
)
def test_tokens_sharing_the_star_group_are_asked_once(text, asked):
    from laion_hf.download.robots import tokens_to_check

    assert tokens_to_check(text, (OUR_TOKEN, "CCBot", "GPTBot")) == asked

"""TDMRep's tdmrep.json: rules, first match, robots.txt-style patterns, broken files declaring nothing."""

from __future__ import annotations

import json

import pytest

from laion_hf.download.sites import ABSENT, FOUND, SiteFile
from laion_hf.download.tdmrep import MAX_RULES, TDMREP, TdmRepRules, parse_rules, pattern_matches

ORIGIN = "https://news.example:443"


def rules(content) -> TdmRepRules:
    text = content if isinstance(content, str) else json.dumps(content)
    return TdmRepRules(SiteFile(ORIGIN + "/.well-known/tdmrep.json", FOUND, 200, text, "cd" * 32, 0.0))


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/", "/a.jpg", True),
        ("/img/", "/img/a.jpg", True),
        ("/img/", "/image/a.jpg", False),
        ("/*", "/a.jpg", True),
        ("/*.jpg", "/x/y/a.jpg", True),
        ("/*.jpg$", "/a.jpg?x=1", False),
        ("/*.jpg$", "/a.jpg", True),
        ("/a$", "/a", True),
        ("/a$", "/ab", False),
        ("/a/*/c/*/e", "/a/b/c/d/e/f", True),
        ("/a/*/c/*/e", "/a/b/d/e", False),
        ("/a*b$", "/ab", True),
        ("/a*ab$", "/ab", False),  # the parts may not overlap
    ],
)
def test_patterns(pattern, path, matches):
    assert pattern_matches(pattern, path) is matches


def test_the_first_matching_rule_applies():
    site = rules([
        {"location": "/free/*", "tdm-reservation": 0},
        {"location": "/", "tdm-reservation": 1, "tdm-policy": "https://news.example/tdm-policy.json"},
    ])
    assert site.verdict(ORIGIN + "/free/a.jpg") is None
    assert site.verdict(ORIGIN + "/paid/a.jpg") == (
        TDMREP,
        f"{ORIGIN}/.well-known/tdmrep.json (sha256 {'cd' * 32}) rule 1 location '/': tdm-reservation 1, "
        "tdm-policy https://news.example/tdm-policy.json",
    )


def test_a_url_no_rule_matches_is_not_reserved():
    assert rules([{"location": "/photos/*", "tdm-reservation": 1}]).verdict(ORIGIN + "/img/a.jpg") is None


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"location": "/", "tdm-reservation": 1}',  # an object, not an array
        [{"location": "/", "tdm-reservation": 2}],  # not a value of the protocol
        [{"location": "/", "tdm-reservation": "1"}],
        [{"location": "/", "tdm-reservation": True}],
        [{"tdm-reservation": 1}],  # no location
        [{"location": 7, "tdm-reservation": 1}],
        [],
    ],
)
def test_broken_files_reserve_nothing(content):
    assert rules(content).verdict(ORIGIN + "/a.jpg") is None


def test_an_absent_file_reserves_nothing_and_hostile_files_are_bounded():
    assert TdmRepRules(SiteFile(ORIGIN + "/.well-known/tdmrep.json", ABSENT, 404)).verdict(ORIGIN + "/a.jpg") is None
    many = [{"location": f"/r{i}/", "tdm-reservation": 1} for i in range(MAX_RULES + 500)]
    assert len(parse_rules(json.dumps(many))) == MAX_RULES
    assert rules(many).verdict(ORIGIN + f"/r{MAX_RULES + 10}/a.jpg") is None  # past the rules read
    # a pattern made to backtrack is matched in linear time
    assert rules([{"location": "/" + "*a" * 200 + "b$", "tdm-reservation": 1}]).verdict(ORIGIN + "/" + "a" * 2000) is None

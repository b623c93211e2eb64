"""The user-agent tokens a download answers to in robots.txt groups and scoped ``X-Robots-Tag`` values.

Sites opt out of dataset building by naming the crawlers of AI developers in
their robots.txt (``User-agent: GPTBot`` / ``Disallow: /``), so a download
respects the rules for its own token *and* for each of these: a URL is
disallowed if the rules forbid it to any of them (the site's most restrictive
answer to a dataset builder). Each token with the page that documents it:

=================== ==================================================================================
``CCBot``           Common Crawl, the crawl LAION's candidates come from: https://commoncrawl.org/ccbot
``GPTBot``          OpenAI: https://platform.openai.com/docs/bots
``ClaudeBot``       Anthropic: https://support.anthropic.com/en/articles/8896518
``anthropic-ai``    Anthropic's earlier token, still in many robots.txt files (same page)
``Google-Extended`` Google's AI-training control: https://developers.google.com/search/docs/crawling-indexing/google-common-crawlers
``Applebot-Extended`` Apple's AI-training control: https://support.apple.com/en-us/119829
``meta-externalagent`` Meta: https://developers.facebook.com/docs/sharing/webmasters/web-crawlers
``PerplexityBot``   Perplexity: https://docs.perplexity.ai/guides/bots
``Bytespider``      ByteDance (no vendor page; listed by https://github.com/ai-robots-txt/ai.robots.txt)
``img2dataset``     img2dataset's token for ``X-Robots-Tag`` (its README, "user_agent_token")
=================== ==================================================================================

The community list https://github.com/ai-robots-txt/ai.robots.txt tracks more;
``--agent-tokens`` replaces this list.
"""

from __future__ import annotations

#: Our own product token (RFC 9309 section 2.2.1: letters, digits, ``-`` and ``_``).
OUR_TOKEN = "laion-hf"
AI_AGENT_TOKENS = (
    "CCBot",
    "GPTBot",
    "ClaudeBot",
    "anthropic-ai",
    "Google-Extended",
    "Applebot-Extended",
    "meta-externalagent",
    "PerplexityBot",
    "Bytespider",
    "img2dataset",
)

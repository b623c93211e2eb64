"""The configs of a build: each published variant or subset is an image pass over the last step's shards.

A config's stages: removal lists, a punsafe limit and keywords
(:class:`~laion_hf.stages.removal.RemovalStage`), then a language subset
(:class:`~laion_hf.stages.language.LanguageStage`). Each config is written to
its own folder, with the embeddings of exactly its rows beside it
(:mod:`laion_hf.io.embeddings`), so an index built from a config serves only
rows the config publishes.
"""

from __future__ import annotations

from collections.abc import Sequence

from laion_hf.core.stage import Stage
from laion_hf.io.removal_lists import load_removal_sets
from laion_hf.stages.language import LanguageStage
from laion_hf.stages.removal import RemovalStage, keyword_pattern, load_keywords
from laion_hf.steps.registry import ImagePass
from laion_hf.steps.specs import ConfigSpec


def config_pass(config: ConfigSpec, extra_removals: Sequence[tuple[str, str]] = (), embeddings: str | None = None) -> ImagePass:
    """The pass that makes one config; ``embeddings`` is the clip-retrieval folder whose rows it carries along."""
    from laion_hf.io.embeddings import ConfigEmbeddings

    stages: list[Stage] = []
    specs = [(r.kind, r.file) for r in config.remove] + list(extra_removals)
    keywords = load_keywords(config.keyword_file) if config.keyword_file else []
    if specs or config.punsafe_above is not None or keywords:
        stages.append(
            RemovalStage(
                removal=load_removal_sets(specs) if specs else None,
                punsafe_threshold=config.punsafe_above,
                keyword_regex=keyword_pattern(keywords),
                name=f"{config.name}: removal",
            )
        )
    if config.language_in or config.language_not_in or config.language_detected is not None:
        stages.append(
            LanguageStage(
                language_in=config.language_in,
                language_not_in=config.language_not_in,
                language_detected=config.language_detected,
                reason="other-subset",
                name=f"{config.name}: subset",
            )
        )
    return ImagePass(stages, sidecar=ConfigEmbeddings.factory(embeddings) if embeddings else None)

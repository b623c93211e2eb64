"""An OIG-style instruction-data builder: sources -> templates -> PII -> quality -> decontamination -> dedup -> Hub configs.

One output schema for every constituent (:mod:`oig.schema`), so ``load_dataset(repo, config)``
works for each constituent, for ``all`` and for ``moderation`` alike.
"""

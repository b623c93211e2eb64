"""The download step's parts, one concern per module (the entry point is :func:`laion_hf.steps.download.download`).

``addresses`` which hosts may be contacted and where to connect; ``fetch`` one
URL with pinned connections, checked redirects, a deadline and a body cap;
``consent`` the step that judges candidates by their sites' ``robots``.txt and
``tdmrep``.json, fetched once per origin by ``sites``, for the tokens of
``agents``; ``optout`` header opt-outs (X-Robots-Tag, tdm-reservation);
``politeness`` per-host concurrency, rate, Retry-After and back-off;
``images`` LAION's image rules on original bytes; ``shard`` one shard's task
and img2dataset's layout; ``candidates`` the inputs; ``retry`` the
failures-only merge; ``audit`` the opt-out list; ``report`` the run's account.
"""

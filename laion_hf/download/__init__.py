"""The download step's parts, one concern per module (the entry point is :func:`laion_hf.steps.download.download`).

``addresses`` which hosts may be contacted and where to connect; ``fetch`` one
URL with pinned connections, checked redirects, a deadline and a body cap;
``optout`` X-Robots-Tag directives; ``images`` LAION's image rules on original
bytes; ``shard`` one shard's task and img2dataset's layout; ``candidates`` the
inputs; ``retry`` the failures-only merge; ``report`` the run's account.
"""

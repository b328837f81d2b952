"""The two HTTP transports under ``EachlabsHook``, with one shape: ``send(request, settings)``.

``sync`` sends with ``requests`` on workers; ``aio`` sends with ``aiohttp`` in the triggerer (one
session per event loop, shared by every trigger in it). Both send exactly the ``api.HttpRequest``
they are given and read its answer under the same rules (``body``): no redirect is followed, every
answer is capped after decompression, every request has a total deadline and not only a per-read
timeout, a public-only request refuses a peer address that is not public, and every failure becomes
an ``EachlabsError`` that says whether the request may have reached the server. Retrying is not
theirs: ``retrying`` wraps them.
"""

"""The read-only operators' page served by the appliance (``[web]``, off by default).

:mod:`edge.web.config` (``WebConfig``), :mod:`edge.web.tap` (the pipeline's latest and
rejected frames, encoded only on request), :mod:`edge.web.payloads` (the one reader of
``psd`` payload keys, shared with ``crystal-edge trend``), :mod:`edge.web.auth`
(GET/HEAD only; token, Bearer or Basic), :mod:`edge.web.app` (routes),
:mod:`edge.web.server` (uvicorn in a thread of the service). The page itself is
``static/`` (HTML, a script, uPlot). See docs/web.md.
"""

"""The web UI served on the HTTP port: server-rendered pages (Jinja2, sandboxed and autoescaped)
and the small static files they use, shipped as package data. No build step, no CDN.

``routes.web_routes`` lists the pages for ``app.py``; ``rendering.PageRenderer`` renders a page
from ``templates/`` (every page extends ``templates/base.html``).
"""

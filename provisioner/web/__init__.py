"""The dashboard the daemon serves at /ui: server-rendered pages (jinja2) that htmx
refreshes in place, over the same API documents the CLI reads (dispatched in process).
Browser libraries come from the npm registry at setup (package.json, package-lock.json)
and are served as published: no build step, nothing fetched at run time."""

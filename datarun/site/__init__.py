"""The static site: leaderboards, submission pages and plots, written as files (`datarun site`).

model.py decides what each page shows (the public and private rules included) from the
board's rows; plots.py draws plots as SVG; pages.py renders with Jinja2; build.py writes
only what changed, atomically. Jinja2 and matplotlib are imported by rendering alone, so
no other command pays for them.
"""

from datarun.site.build import build_site

__all__ = ["build_site"]

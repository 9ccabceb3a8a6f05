"""axe-core in the browser tests: load the local copy into a page, run it, report what matters.

The pages' Content-Security-Policy allows scripts from our own origin only, so axe is
served to the page under a same-origin path that the test intercepts (the request never
reaches the app), from the copy `make browser` installs with npm (package-lock.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import BrowserContext, Page

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
AXE_PATH = "/__axe__.js"

# WCAG 2.0, 2.1 and 2.2 at levels A and AA: what the site promises.
WCAG_AA_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


@dataclass(frozen=True)
class Violation:
    """One axe rule broken on a page, with the first few elements that break it."""

    rule: str
    impact: str
    help: str
    targets: list[str]
    snippets: list[str]

    def describe(self, limit: int = 3) -> str:
        """Rule, impact and help, then the first ``limit`` offending elements."""
        lines = [f"{self.rule} ({self.impact}): {self.help}"]
        for target, snippet in list(zip(self.targets, self.snippets, strict=True))[:limit]:
            lines.append(f"    {target}  {snippet[:160]}")
        if len(self.targets) > limit:
            lines.append(f"    … and {len(self.targets) - limit} more")
        return "\n".join(lines)


def serve_axe(context: BrowserContext | Page) -> None:
    """Answer AXE_PATH on the app's origin with the local axe-core (call once per context)."""
    if not AXE.exists():
        raise FileNotFoundError(f"no axe-core at {AXE}: run `make browser` (npm ci)")
    context.route(
        f"**{AXE_PATH}",
        lambda route: route.fulfill(path=str(AXE), content_type="text/javascript"),
    )


def run_axe(page: Page) -> list[Violation]:
    """Serious and critical WCAG 2.x A/AA violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=AXE_PATH)
    result = page.evaluate(
        """tags => axe.run(document, {
               runOnly: {type: "tag", values: tags},
               resultTypes: ["violations"],
           }).then(r => r.violations.map(v => ({
               rule: v.id, impact: v.impact, help: v.help,
               targets: v.nodes.map(n => n.target.join(" ")),
               snippets: v.nodes.map(n => n.html),
           })))""",
        WCAG_AA_TAGS,
    )
    return [Violation(**v) for v in result if v["impact"] in BLOCKING_IMPACTS]


def describe(violations: list[Violation], where: str = "") -> str:
    """A readable list for an assertion message."""
    head = f"{len(violations)} serious/critical axe violation(s)" + (
        f" on {where}" if where else ""
    )
    return "\n".join([head, *(f"  {v.describe()}" for v in violations)])

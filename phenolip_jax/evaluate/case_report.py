"""The per-case Markdown page predict writes beside its outputs (OUT/cases.md): per case, its images (links
relative to the page), its note, and its profile (evaluate/cases.py) with the probabilities behind it."""
from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

PAGE = "cases.md"


def _cell(text: Any) -> str:
    """Table-cell text: pipes escaped and line breaks flattened, so a note cannot break the table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _term(t: Mapping[str, Any]) -> str:
    return f"{t['hpo_id']} {_cell(t['name'])}"


def _evidence(t: Mapping[str, Any]) -> str:
    parts = []
    if "image" in t.get("sources", ()):
        parts.append("images")
    if "note" in t.get("sources", ()):
        parts.append("note (" + ", ".join(f'"{_cell(s)}"' for s in t.get("note_spans", ())) + ")")
    return "; ".join(parts)


def _implies(t: Mapping[str, Any]) -> str:
    return ", ".join(_term(i) + (f" ({i['probability']:.3f})" if "probability" in i else "")
                     for i in t.get("implies", ()))


def case_section(profile: Mapping[str, Any], image_links: Sequence[str]) -> list[str]:
    """The Markdown lines of one case: heading, images, note, the profile table, uncertain and dropped terms."""
    lines = [f"## Case `{profile['case_id']}`", ""]
    if image_links:
        lines += [" ".join(f"![{_cell(name)}]({link})" for name, link in zip(profile["images"], image_links)), ""]
    else:
        lines += ["No readable image.", ""]
    if profile.get("note"):
        lines += [f"> {line}" for line in profile["note"].splitlines()] + [""]
    rows = [("present", t) for t in profile["present"]] + [("excluded", t) for t in profile["excluded"]]
    if rows:
        names = ", ".join(f"`{os.path.basename(n)}`" for n in profile["images"])
        lines += [f"| status | HPO term | probability ({profile['aggregate']}) | per image ({names}) | evidence "
                  "| implies |", "|---|---|---|---|---|---|"]
        for status, t in rows:
            p = f"{t['probability']:.3f}" if "probability" in t else ""
            each = " / ".join(f"{q:.3f}" for q in t.get("image_probabilities", ()))
            lines.append(f"| {status} | {_term(t)} | {p} | {each} | {_evidence(t)} | {_implies(t)} |")
        lines.append("")
    else:
        lines += ["No term reaches the profile.", ""]
    if profile.get("uncertain"):
        lines += ["Uncertain in the note (asserted neither way): "
                  + "; ".join(f"{_term(t)} ({_evidence(t)})" for t in profile["uncertain"]), ""]
    for t in profile.get("dropped", ()):
        p = f" ({t['probability']:.3f})" if "probability" in t else ""
        lines += [f"Dropped: {_term(t)}{p}: {_cell(t['reason'])}", ""]
    return lines


def render(profiles: Sequence[Mapping[str, Any]], image_links: Sequence[Sequence[str]],
           context: Sequence[str] = ()) -> str:
    """The whole page: a title, the `context` lines (model, release, rules), then one section per case."""
    lines = ["# Case profiles", ""] + [f"- {c}" for c in context] + ([""] if context else [])
    for profile, links in zip(profiles, image_links):
        lines += case_section(profile, links)
    return "\n".join(lines).rstrip() + "\n"


def write_case_report(out_dir: str, profiles: Sequence[Mapping[str, Any]], images_root: str,
                      context: Sequence[str] = ()) -> str:
    """OUT/cases.md; each profile's images (relative to `images_root`) are linked relative to the page."""
    links = [[urllib.parse.quote(os.path.relpath(os.path.join(images_root, name), out_dir).replace(os.sep, "/"))
              for name in p["images"]] for p in profiles]
    path = os.path.join(out_dir, PAGE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(profiles, links, context))
    return path

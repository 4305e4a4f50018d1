"""Art types and the additive/narrative split, defined once for the whole project.

Additive types carry their meaning in the visible objects; narrative types carry it in
relationships, symbols and stories. Types in neither group (study, other, untyped) are left out
of group aggregates.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ADDITIVE = ("still-life", "landscape", "interior", "portrait", "genre")
NARRATIVE = ("mythological", "religious", "historical")
OTHER = ("study", "other")

# Spellings found in WikiArt, SemArt and the Web Gallery of Art, mapped to the canonical type.
TYPE_ALIASES = {
    "still life": "still-life",
    "still_life": "still-life",
    "stilllife": "still-life",
    "mythology": "mythological",
    "religion": "religious",
    "history": "historical",
    "genre painting": "genre",
    "genre_painting": "genre",
}

# Environment variable naming a JSON file that overrides the split, e.g.
# {"additive": ["portrait", "landscape"], "narrative": ["religious"]}.
SPLIT_ENV = "SEMGAP_TYPE_SPLIT"


def normalize_type(value: object) -> str:
    """Return the canonical spelling of an art type, or "" for a missing value."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = re.sub(r"\s+", " ", str(value).strip().lower())
    return TYPE_ALIASES.get(text, text)


@dataclass(frozen=True)
class TypeSplit:
    """The two groups of art types that the gap factor compares."""

    additive: tuple[str, ...] = ADDITIVE  # meaning lies in the visible objects
    narrative: tuple[str, ...] = NARRATIVE  # meaning lies in stories and symbols
    colors: dict[str, str] = field(default_factory=dict, compare=False)

    def group(self, art_type: object) -> str:
        """Return "additive", "narrative" or "" for an art type."""
        name = normalize_type(art_type)
        if name in self.additive:
            return "additive"
        if name in self.narrative:
            return "narrative"
        return ""

    @property
    def types(self) -> tuple[str, ...]:
        return self.additive + self.narrative

    def to_dict(self) -> dict:
        return {"additive": list(self.additive), "narrative": list(self.narrative)}


def load_split(path: str | os.PathLike | None = None) -> TypeSplit:
    """Load the split from a JSON file, from $SEMGAP_TYPE_SPLIT, or return the default."""
    path = path or os.environ.get(SPLIT_ENV)
    if not path:
        return TypeSplit()
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        additive = tuple(normalize_type(t) for t in config["additive"])
        narrative = tuple(normalize_type(t) for t in config["narrative"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Invalid type split file {path}: {error}. Expected JSON like "
            '{"additive": ["portrait", ...], "narrative": ["religious", ...]}.'
        ) from error
    overlap = set(additive) & set(narrative)
    if overlap:
        raise ValueError(f"Type split file {path} puts {sorted(overlap)} in both groups.")
    return TypeSplit(additive=additive, narrative=narrative)


# Okabe-Ito colour-blind-safe palette: one colour per type, shared by every chart.
TYPE_COLORS = {
    "portrait": "#E69F00",
    "landscape": "#009E73",
    "still-life": "#F0E442",
    "interior": "#CC79A7",
    "genre": "#56B4E9",
    "religious": "#0072B2",
    "mythological": "#D55E00",
    "historical": "#882255",
    "study": "#6E6E6E",
    "other": "#ABABAB",
    "": "#E8E8E8",
}
# Paul Tol's sand and indigo: colour-blind-safe, and far from every type colour above, so a group bar
# never looks like a type bar. Sand is light, so charts outline group bars in dark ink.
GROUP_COLORS = {"additive": "#DDCC77", "narrative": "#332288", "": "#BBBBBB"}

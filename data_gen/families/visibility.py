"""Rules for what a photo can show beyond the diagnosis: body location, visible signs, age group, sex."""
import re

from data_gen.corpus import VISIBLE_SYMPTOMS
from data_gen.derm1m import Row

_DERMOSCOPIC = re.compile(r"dermoscop|dermatoscop", re.IGNORECASE)
_NOT_A_PLACE = re.compile(r"^\s*(medication|medicine|antifungal|antibiotic|antiviral|drug|therap|treatment|"
                          r"steroid|corticosteroid|tablet|pill|agent|intake|supplement|isotretinoin|retinoid)",
                          re.IGNORECASE)
# The caption says the picture shows the person (not only a patch of skin) and who they are.
_PERSON_SHOWN = re.compile(r"\b(image|photo|photograph|picture)\b[^.]{0,40}\b(shows|depicts|of)\b[^.]{0,60}?"
                           r"\b(infant|baby|newborn|toddler|child|boy|girl|teenager|adolescent|man|woman|"
                           r"elderly|older adult)\b", re.IGNORECASE)


def visible_location(row: Row) -> tuple[str | None, str]:
    """The one body location a photo of this row shows, or (None, why not)."""
    if len(row.locations) != 1:
        return None, "no body location" if not row.locations else "several body locations (not one photo site)"
    if row.source_type == "forum":
        return None, "forum post: location comes from the history, not the photo"
    if _DERMOSCOPIC.search(row.caption):
        return None, "dermoscopic close-up cannot show the body site"
    loc = row.locations[0]
    for m in re.finditer(rf"\b{re.escape(loc)}(s|es)?\b", row.caption, re.IGNORECASE):
        if not _NOT_A_PLACE.match(row.caption[m.end():]):
            return loc, ""
    return None, "location not stated as where the lesion is"


def visible_signs(row: Row) -> list[str]:
    return [s for s in row.symptoms if s in VISIBLE_SYMPTOMS]


def age_group(age: int) -> str:
    return "an infant" if age < 2 else "a child" if age < 13 else "a teenager" if age < 18 else \
        "an adult" if age < 65 else "an older adult"


def person_shown(row: Row) -> tuple[bool, str]:
    """Age group and sex are asked only when the caption says the picture shows the person."""
    if row.source_type == "forum":
        return False, "forum post: age/sex come from the history"
    if not _PERSON_SHOWN.search(row.caption):
        return False, "caption does not say the picture shows the person"
    return True, ""

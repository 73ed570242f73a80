"""Caption sentences an image can support: split a caption into sentences and say why one cannot stay.

A photo shows morphology, colour, distribution, the site and (for a trained eye) the diagnosis; it
cannot show a history, a duration, a treatment, a cause, an age, a sensation, a count, a forum
thread or the lecture a video frame came from. `unsupported(sentence, names)` returns the first
such reason ("" = the sentence may stay); `names` (DiseaseNames) are masked first, so "fixed drug
eruption" is a diagnosis, not a treatment, and "infantile atopic dermatitis" no age.
"""
from __future__ import annotations

import re

from data_gen.gates import LEAK_PHRASES

_ABBREVIATIONS = re.compile(r"(\b(e\.g|i\.e|vs|etc|dr|fig|figs|approx|al|no|st|mr|mrs|ms)|\b[A-Z])\.$", re.IGNORECASE)
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_END = re.compile(r"[.!?][\"')\]]?$")
_TOKEN = re.compile(r"[a-z0-9]+")
# Figure marks in parentheses ("(arrow)", "(circle)", "(B)"): removed, the sentence stays.
FIGURE_MARKS = re.compile(r"\s*\((?:[A-Za-z]|[ivx]{1,4}|(?:(?:black|white|red|yellow|blue|green|open|closed) )?"
                          r"(?:arrows?|arrowheads?|circles?|asterisks?|stars?|box(?:es)?|squares?|insets?)"
                          r"(?: and (?:arrows?|arrowheads?|circles?|asterisks?|stars?))?)\)")


def _words(*alternatives: str) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(alternatives) + r")\b", re.IGNORECASE)


# (reason, pattern), in the order they are tried: a sentence is counted under its first reason.
REASONS: list[tuple[str, re.Pattern]] = [
    ("non-English text", re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")),
    ("forum talk", _words(r"poster", r"forums?", r"users?", r"repl(y|ies|ied)", r"discuss(ion|ions|ed)",
                          r"contributors?", r"netizens?", r"inquir\w*", r"seek(s|ing)? (advice|help|information)",
                          r"asked", r"asking", r"commenters?", r"thread")),
    ("video or lecture talk", re.compile(
        r"\b(this|the|a) (video|clip|lecture|presentation|slide|webinar|frame)\b|\b(presenter|speaker|narrator)\b"
        r"|\bthis (image|picture|photo) (describes|discusses|explains|is about|talks about|highlights|emphasi[sz]es"
        r"|illustrates the (concept|importance|difference))", re.IGNORECASE)),
    ("refers to the text or another figure", re.compile(
        LEAK_PHRASES.pattern + r"|\b(previous|next|following|preceding) (image|figure|photo|panel|picture)"
        r"|\b(figure|fig\.|panel|same (patient|horse|case|lesion) as)\b|\([^)]*\bgroup\b[^)]*\)", re.IGNORECASE)),
    ("age or sex", re.compile(
        r"\d+[- ](year|month|week|day)s?[- ]old|\b(years?|months?) old\b|\baged?\b|\bages\b"
        r"|\b(infant|infants|infantile|baby|babies|newborns?|neonat\w*|toddlers?|child|children|childhood|boys?"
        r"|girls?|teen\w*|adolescen\w*|juvenile|pediatric|paediatric|elderly|adults?|pregnan\w*|males?|females?"
        r"|men|women|man|woman|wife|husband|mother|father|son|daughter|he|she|his|her)\b", re.IGNORECASE)),
    ("history or duration", _words(r"history", r"histories", r"duration", r"ago", r"since", r"recurr\w*",
                                   r"previous(ly)?", r"prior", r"initially", r"later", r"began", r"begun",
                                   r"start(ed|s)?", r"onset", r"progress(ed|ive|ively|ion)?", r"developed",
                                   r"(has|have|had) been", r"(also )?had", r"chronic", r"acute", r"sudden(ly)?",
                                   r"years?", r"months?", r"weeks?", r"days?", r"hours?", r"overnight", r"follow-up",
                                   r"after",
                                   r"spread(ing)?", r"worsen\w*", r"improv\w*", r"resolv\w*", r"persist\w*")),
    ("treatment or procedure", _words(r"treat\w*", r"therap\w*", r"medicat\w*", r"medicines?", r"drugs?",
                                      r"creams?", r"ointments?", r"lotions?", r"gels?", r"emollients?",
                                      r"moisturi[sz]\w*", r"\w*steroids?", r"antibiotics?", r"antifungals?",
                                      r"antivirals?", r"antihistamines?", r"immunosuppress\w*", r"prescri\w*",
                                      r"surg\w*", r"excis\w*", r"biops\w*", r"lasers?", r"cryo\w*", r"inject\w*",
                                      r"infiltrations?", r"infusions?", r"doses?", r"mg", r"manag\w*", r"cur(e|ed)",
                                      r"removed?", r"removal", r"avoid\w*", r"supplement\w*", r"tablets?",
                                      r"appl(y|ied|ication)", r"remed(y|ies)", r"vaccin\w*", r"relie(f|ve)",
                                      r"heal(s|ed|ing)?", r"dermatologist", r"doctor", r"consult\w*")),
    ("laboratory or other test", _words(r"laborator\w*", r"lab", r"blood", r"serum", r"ige", r"eosinophil\w*",
                                        r"cultures?", r"pcr", r"test(s|ed|ing)?", r"levels?", r"counts?",
                                        r"histolog\w*", r"patholog\w*", r"immunofluorescen\w*")),
    ("cause or mechanism", _words(r"caus\w*", r"due to", r"trigger\w*", r"a?etiolog\w*", r"risk factors?",
                                  r"genetic\w*", r"immune", r"autoimmune", r"allergic reaction", r"allergens?",
                                  r"irritants?", r"overproduction", r"deficien\w*", r"related to", r"linked to",
                                  r"associated with", r"results? (of|from)", r"resulting from", r"stress",
                                  r"exposure", r"bacteri(um|a)", r"virus(es)?", r"fungus", r"pathogen\w*",
                                  r"transmi\w*", r"contagious", r"inherit\w*")),
    ("sensation or symptom the image cannot show", _words(r"itch\w*", r"prurit\w*", r"pain\w*", r"burning",
                                                          r"tingl\w*", r"tender\w*", r"sore(ness)?", r"discomfort",
                                                          r"sting\w*", r"fever\w*", r"bothersome", r"sensations?",
                                                          r"feel(s|ing)?", r"symptoms?", r"asymptomatic")),
    ("number", re.compile(r"\d|\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty"
                          r"|forty|fifty|hundreds?|thousands?|millions?|dozens?|percent|half)\b", re.IGNORECASE)),
    ("general knowledge, not this image", re.compile(
        r"\b(common(ly)?|often|usually|typical(ly)?|frequent(ly)?|rare(ly)?|tends? to|incidence|prevalen\w*"
        r"|population|worldwide|prognosis|complications?|important|should|known as|also called|characteristic of"
        r"|may|might|could|can (?!be seen|be observed|be noted)|leads? to|lead to|mainly|generally)\b",
        re.IGNORECASE)),
]
# Words naming something a photo shows: morphology, colour, surface, pattern, distribution or site.
VISIBLE = _words(
    r"lesions?", r"rash(es)?", r"eruptions?", r"plaques?", r"patch(es)?", r"papul\w*", r"nodul\w*", r"macul\w*",
    r"vesic\w*", r"bullae?", r"bullous", r"blisters?", r"pustul\w*", r"ulcer\w*", r"erosions?", r"erosive", r"crust\w*",
    r"scal(e|es|y|ing)", r"scars?", r"spots?", r"bumps?", r"growths?", r"mass(es)?", r"tumou?rs?", r"warts?",
    r"cysts?", r"wheals?", r"hives", r"striae", r"atroph\w*", r"thicken\w*", r"fissur\w*", r"keratot\w*", r"horn",
    r"red\w*", r"erythem\w*", r"pink", r"purple", r"violaceous", r"brown\w*", r"black", r"white\w*", r"yellow\w*",
    r"gr[ae]y", r"blue", r"pigment\w*", r"hyperpigment\w*", r"hypopigment\w*", r"depigment\w*", r"colou?r\w*",
    r"shiny", r"smooth", r"rough", r"dry", r"raised", r"elevated", r"flat", r"dome-shaped", r"pedunculated",
    r"verrucous", r"translucent", r"inflamed", r"swollen", r"swelling", r"oval", r"round", r"annular", r"circular",
    r"linear", r"grouped", r"clustered", r"symmetric\w*", r"bilateral", r"unilateral", r"widespread",
    r"generali[sz]ed", r"locali[sz]ed", r"diffuse", r"scattered", r"confluent", r"border\w*", r"margins?",
    r"edges?", r"vessels?", r"vascular\w*", r"dots?", r"dotted", r"globules?", r"streaks?", r"network",
    r"pseudonetwork", r"rosettes?", r"burrows?", r"dermoscop\w*", r"surface", r"pattern", r"appearance",
    r"face", r"facial", r"scalp", r"forehead", r"cheeks?", r"nose", r"ears?", r"lips?", r"mouth", r"oral", r"tongue",
    r"mucosa\w*", r"gingiva\w*", r"neck", r"chest", r"trunk", r"back", r"abdomen", r"arms?", r"forearms?", r"elbows?",
    r"hands?", r"palms?", r"fingers?", r"digits?", r"nails?", r"legs?", r"thighs?", r"knees?", r"shins?", r"feet",
    r"foot", r"soles?", r"toes?", r"groin", r"genital\w*", r"buttocks?", r"axilla\w*", r"extremit\w*", r"hair",
    r"intraoral", r"lingual", r"skin")


def split(caption: str) -> list[str]:
    """The caption's sentences, in order; abbreviations ("e.g.", "Dr.", initials) do not end one."""
    pieces = [p.strip() for p in _BOUNDARY.split(caption.strip()) if p.strip()]
    out: list[str] = []
    for piece in pieces:
        if out and _ABBREVIATIONS.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def ends(sentence: str) -> bool:
    """Whether the sentence closes with an end mark (a caption cut to length ends in the middle of one)."""
    return bool(_END.search(sentence.strip()))


class DiseaseNames:
    """Finds disease names in a sentence: `sub(repl, text)` like a compiled pattern, but it only tries the
    names whose first word the sentence holds (one 400-name alternation at every position is slow)."""

    def __init__(self, names):
        parts = {part.strip().lower() for n in names for part in n.split(",")}
        self.by_first: dict[str, list[str]] = {}
        for name in sorted((p for p in parts if len(p) >= 4 and _TOKEN.search(p)), key=len, reverse=True):
            self.by_first.setdefault(_TOKEN.search(name).group(0), []).append(name)
        self._patterns: dict[tuple[str, ...], re.Pattern] = {}

    def sub(self, repl: str, text: str) -> str:
        found = tuple(n for w in sorted(set(_TOKEN.findall(text.lower())) & self.by_first.keys())
                      for n in self.by_first[w])
        if not found:
            return text
        if found not in self._patterns:  # longest first, so a longer name wins
            alts = sorted(found, key=len, reverse=True)
            self._patterns[found] = re.compile(r"\b(" + "|".join(map(re.escape, alts)) + r")\b", re.IGNORECASE)
        return self._patterns[found].sub(repl, text)


def unsupported(sentence: str, names: "DiseaseNames", reasons=REASONS, must_name_visible: bool = True) -> str:
    """Why the image cannot support this sentence ("" = it can); disease names are masked first.
    `must_name_visible`: a sentence naming no disease and nothing visible goes too ("Front view.")."""
    masked = names.sub(" DISEASE ", sentence)
    for reason, pattern in reasons:
        if pattern.search(masked):
            return reason
    if must_name_visible and "DISEASE" not in masked and not VISIBLE.search(masked):
        return "names nothing the image shows"
    return ""

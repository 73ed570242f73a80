#!/usr/bin/env bash
# Create .venv in the repository and install dermvqa with every extra (idempotent).
# `--test` also installs the Debian Chromium + driver used by the browser test (both, if either is missing).
# WordNet 3.0 for METEOR comes from Debian's wordnet-base and wordnet-sense-index (needs root; without them METEOR
# is reported as not computed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--test" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "install.sh: could not install chromium; the browser test will fail" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>/dev/null \
  || .venv/bin/python -m pip install -q torch torchvision
.venv/bin/python -m pip install -q -e ".[all]"

# nltk reads WordNet from <sys.prefix>/nltk_data/corpora/wordnet: copy Debian's files there (nltk refuses symlinks
# that leave its folder) and add `lexnames`, the one file wordnet-base lacks (WordNet's fixed table of its 45
# lexicographer files: number, name, part of speech)
WORDNET=/usr/share/wordnet
if [ ! -f "$WORDNET/data.noun" ] || [ ! -f "$WORDNET/index.sense" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    wordnet-base wordnet-sense-index) >/dev/null 2>&1 \
    || echo "install.sh: could not install WordNet (wordnet-base); METEOR will be reported as not computed" >&2
fi
if [ -f "$WORDNET/data.noun" ] && [ -f "$WORDNET/index.sense" ]; then
  NLTK_WORDNET=.venv/nltk_data/corpora/wordnet
  mkdir -p "$NLTK_WORDNET"
  for f in "$WORDNET"/{data,index}.{adj,adv,noun,verb} "$WORDNET"/{adj,adv,noun,verb}.exc "$WORDNET"/{cntlist.rev,index.sense}; do
    cp -p "$f" "$NLTK_WORDNET/"
  done
  i=0
  for name in adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body \
      noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive \
      noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation \
      noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication \
      verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception \
      verb.possession verb.social verb.stative verb.weather adj.ppl; do
    case $name in noun.*) pos=1 ;; verb.*) pos=2 ;; adj.*) pos=3 ;; adv.*) pos=4 ;; esac
    printf '%02d\t%s\t%d\n' "$i" "$name" "$pos"
    i=$((i + 1))
  done > "$NLTK_WORDNET/lexnames"
fi

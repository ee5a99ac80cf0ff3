#!/usr/bin/env bash
# WordNet 3.0 for METEOR, placed in the venv's nltk data folder (nltk searches <venv>/nltk_data by default).
# In order: Debian's wordnet-base + wordnet-sense-index when they are installed (or installable: root with
# apt-get); else nltk's downloader where the network allows; else one line saying what to install.
set -euo pipefail
python=${1:-.venv/bin/python}
system=${PATHVQA_SYSTEM_WORDNET:-/usr/share/wordnet}   # where Debian puts WordNet
if "$python" -c "import nltk; nltk.data.find('corpora/wordnet')" 2>/dev/null; then
  exit 0
fi
if [ ! -f "$system/data.noun" ] || [ ! -f "$system/index.sense" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing Debian's wordnet-base and wordnet-sense-index"
    apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null; } \
      || true
  fi
fi
if [ -f "$system/data.noun" ] && [ -f "$system/index.sense" ]; then
  "$python" -m pathvqa.scoring.wordnet
  exit 0
fi
data_dir=$("$python" -c "import sys, os; print(os.path.join(sys.prefix, 'nltk_data'))")
echo "no system WordNet: trying nltk's downloader into $data_dir"
if "$python" -c "import nltk, sys; sys.exit(0 if nltk.download('wordnet', download_dir='$data_dir', quiet=True) else 1)" >/dev/null 2>&1 \
   && "$python" -c "import nltk; nltk.data.find('corpora/wordnet')" 2>/dev/null; then
  exit 0
fi
echo "WordNet is missing (METEOR needs it): install Debian's wordnet-base and wordnet-sense-index" \
     "(sudo apt-get install wordnet-base wordnet-sense-index), or run nltk.download('wordnet') where the" \
     "network allows, then 'make setup' again" >&2
exit 1

#!/usr/bin/env bash
# WordNet 3.0 for METEOR, offline: Debian's wordnet-base + wordnet-sense-index, copied into the
# venv's nltk data folder (nltk searches <venv>/nltk_data by default).
set -euo pipefail
python=${1:-.venv/bin/python}
if ! "$python" -c "import nltk; nltk.data.find('corpora/wordnet')" 2>/dev/null; then
  if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      echo "installing Debian's wordnet-base and wordnet-sense-index"
      apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null; }
    else
      echo "WordNet is missing: run 'sudo apt-get install wordnet-base wordnet-sense-index'" \
           "(or nltk.download('wordnet') where the network allows), then 'make setup' again" >&2
      exit 1
    fi
  fi
  "$python" -m pathvqa.scoring.wordnet
fi

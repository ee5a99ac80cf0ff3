"""Offline WordNet 3.0 for METEOR's synonym stage.

nltk looks for ``corpora/wordnet`` in its data folders. Offline, that folder is prepared from
the system's WordNet (Debian ``wordnet-base`` + ``wordnet-sense-index``, in /usr/share/wordnet):
real copies of the database files plus ``lexnames``, which no package ships.
``make setup`` runs ``python -m pathvqa.scoring.wordnet`` to place it in ``<venv>/nltk_data``, a folder
nltk searches by default.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import warnings
from pathlib import Path

from pathvqa.errors import PathVQAError

SYSTEM_WORDNET = Path(os.environ.get("PATHVQA_SYSTEM_WORDNET", "/usr/share/wordnet"))
"""Debian's WordNet (``wordnet-base``, ``wordnet-sense-index``); ``PATHVQA_SYSTEM_WORDNET`` names another copy."""
DATABASE_FILES = [
    *(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")),
    *(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")),
    "index.sense",
]
# The 45 lexicographer files of WordNet 3.0, numbered 00–44, with their part of speech
# (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
HOW_TO_GET = (
    "METEOR needs WordNet 3.0: run `make setup` (it installs Debian's wordnet-base and "
    "wordnet-sense-index), or `python -c \"import nltk; nltk.download('wordnet')\"` where the network allows"
)


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def prepare(data_dir: Path, source: Path = SYSTEM_WORDNET) -> Path:
    """Copy the system WordNet into ``data_dir/corpora/wordnet`` in the layout nltk reads."""
    missing = [f for f in DATABASE_FILES if not (source / f).is_file()]
    if missing:
        raise PathVQAError(f"WordNet files missing in {source}: {', '.join(missing)}. {HOW_TO_GET}")
    target = data_dir / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for name in DATABASE_FILES:
        shutil.copyfile(source / name, target / name)  # real copies: nltk does not follow all links
    (target / "lexnames").write_text(lexnames_text())
    return target


def ensure() -> None:
    """Make WordNet loadable by nltk, preparing it from the system copy if needed; else raise."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        return
    except LookupError:
        pass
    if not (SYSTEM_WORDNET / "data.noun").is_file():
        raise PathVQAError(
            f"WordNet not found in nltk data ({', '.join(nltk.data.path[:3])}, …). {HOW_TO_GET}"
        )
    cache = Path.home() / ".cache" / "pathvqa" / "nltk_data"
    prepare(cache)
    if str(cache) not in nltk.data.path:
        nltk.data.path.append(str(cache))


LEMMA_INDEXES = {f"index.{pos}" for pos in ("adj", "adv", "noun", "verb")}


@functools.lru_cache(maxsize=1)
def reader():
    """The English WordNet reader METEOR's synonym stage takes (``wordnet=``), built once per process.

    nltk's own reader maps WordNet 3.0 onto itself at load time for the multilingual (OMW) data, which
    reads ``index.sense`` twice: about 3 of its 4.5 s. METEOR only looks up English synsets, which
    never read that map, so this reader skips it (``tests/test_metrics.py`` checks it scores as nltk's)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # the OMW map: no multilingual lookups here

        def open(self, fileid):
            if fileid in LEMMA_INDEXES:  # read once, line by line: a plain file is faster (2.0 → 1.5 s)
                return open(os.path.join(self.root.path, fileid), encoding=self._encoding)
            return super().open(fileid)  # data files are read by byte offset: nltk's seekable reader

    ensure()
    with warnings.catch_warnings():  # "multilingual functions are not available": none are used
        warnings.simplefilter("ignore", UserWarning)
        return EnglishWordNet(nltk.data.find("corpora/wordnet"), None)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.prefix) / "nltk_data"
    try:
        print(f"WordNet prepared in {prepare(target)}")
    except PathVQAError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

"""Write slmpack/demo_data/encoder_sentences.txt: the encoder ladder's held-out sentence set.

One sentence per line (``\\n`` inside a line is written as the two characters backslash-n and
restored by slmpack.exporter.encoder.sentences). Mixed lengths: short English sentences from the
standard library's docstrings, long paragraphs (> 256 WordPiece tokens for small vocabularies),
non-ASCII sentences and code lines written here. Deterministic for one Python version; the file in
the repository is the reference (the script documents where it came from).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

MODULES = ("json", "csv", "zipfile", "tarfile", "argparse", "logging", "pathlib", "shutil", "textwrap",
           "difflib", "heapq", "bisect", "functools", "itertools", "collections", "statistics", "fractions",
           "decimal", "datetime", "calendar", "email", "http.client", "urllib.parse", "socket", "selectors",
           "subprocess", "threading", "queue", "sched", "contextlib", "dataclasses", "enum", "typing",
           "inspect", "ast", "tokenize", "pickle", "sqlite3", "gzip", "hashlib", "hmac", "secrets", "random",
           "string", "unicodedata", "locale", "gettext", "base64", "binascii", "struct", "codecs")
HANDWRITTEN = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "¿Dónde está la biblioteca más cercana?",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "東京は日本の首都です。",
    "我喜欢在周末读书和散步。",
    "서울의 겨울은 춥고 건조합니다.",
    "Η γρήγορη καφέ αλεπού πηδά πάνω από το τεμπέλικο σκυλί.",
    "हिंदी भारत की एक प्रमुख भाषा है।",
    "مرحبا بك في عالم البرمجة.",
    "Zażółć gęślą jaźń — a Polish pangram.",
    "Ça coûte 12,50 € ou à peu près 13 $.",
    "Emoji are tokens too: 🙂🚀✨ and so are math symbols ∑ ∫ √ ≤ ≥.",
    "naïve café résumé façade coöperate",
    "def add(a: int, b: int) -> int:\\n    return a + b",
    "for i in range(10): print(i ** 2, end=' ')",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "const xs = [1, 2, 3].map(x => x * 2).filter(x => x > 2);",
    "#include <stdio.h>\\nint main(void) { printf(\"hello\\\\n\"); return 0; }",
    "git rebase --onto main feature~3 feature && git push --force-with-lease",
    "with open('data.json', encoding='utf-8') as f: cfg = json.load(f)",
    "x = np.einsum('bij,bjk->bik', a, b)  # batched matmul",
    "curl -sSL https://example.com/install.sh | sh -s -- --prefix=$HOME/.local",
    "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
    "Ok.", "Yes!", "Why?", "It works.", "Thanks a lot.", "See you tomorrow.",
]


def docstring_sentences() -> tuple[list[str], list[str]]:
    short, long = [], []
    for name in MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        paras = [re.sub(r"\s+", " ", p).strip() for p in doc.split("\n\n")]
        paras = [p for p in paras if p and not p.startswith((">>>", "-", "*", "="))]
        for p in paras:
            for s in re.split(r"(?<=[.!?])\s+", p):
                if 4 <= len(s.split()) <= 40 and len(short) < 200:
                    short.append(s)
        joined = " ".join(paras)
        if len(joined.split()) >= 180 and len(long) < 12:
            long.append(" ".join(joined.split()[:400]))
    return short, long


def main() -> None:
    short, long = docstring_sentences()
    seen, lines = set(), []
    for s in [*short, *long, *HANDWRITTEN]:
        if s not in seen:
            seen.add(s)
            lines.append(s)
    out = Path(__file__).resolve().parents[1] / "slmpack" / "demo_data" / "encoder_sentences.txt"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{out}: {len(lines)} sentences ({len(long)} long)")


if __name__ == "__main__":
    main()

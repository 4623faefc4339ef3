"""Write slmpack/demo_data/tokenizer_corpus.txt: the tokenizer-parity corpus (deterministic).

2,400 lines in eight kinds (300 each): English (lines of the bundled held-out text), code, CJK,
emoji (ZWJ sequences, skin tones, flags), right-to-left text (Arabic, Hebrew, mixed with Latin),
combining marks (decomposed accents, stacked diacritics, Devanagari/Thai), whitespace runs (spaces,
tabs, no-break and ideographic spaces, leading/trailing) and literal special-token strings.
Run: python scripts/make_tokenizer_corpus.py  (same bytes every time)
"""
from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N = 300
CODE = ["def f(x):", "return x ** 2 + 1", "for i in range(10):", "if a != b and c >= d:", "class Foo(Bar):",
        "import numpy as np", "x = {'k': [1, 2, 3]}", "print(f\"{name!r:>10}\")", "// C++: std::vector<int> v;",
        "fn main() { println!(\"hi\"); }", "SELECT * FROM t WHERE id = 42;", "<div class=\"a\">&amp;</div>",
        "0x7fff_ffff | 0b1010 >> 3", "lambda *args, **kw: None", "a[1:-1:2] @= b", "#include <stdio.h>",
        "$ echo $HOME && ls -la | grep '.py'", "try:\n    pass", "1e-10 3.14159 -0.0 1_000_000", "\\n\\t\\\\"]
CJK = ["你好，世界。", "机器学习模型", "東京は日本の首都です。", "こんにちは、カタカナ・ひらがな", "한국어 문장입니다.",
       "漢字かな交じり文", "中文，标点！？", "繁體中文與簡體中文", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３", "一二三四五六七八九十"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "🤖✨", "🧑🏿‍💻", "1️⃣", "🐍 Python", "☕️", "🫠"]
RTL = ["مرحبا بالعالم", "שלום עולם", "العربية: ١٢٣٤", "עברית with English", "كتاب (book) ٢٠٢٦",
       "\u200fRTL mark\u200e", "ﷲ ﻻ", "אָלֶף־בֵּית"]
COMBINING = ["e\u0301", "a\u0308o\u0308u\u0308", "n\u0303", "Z\u0351\u0358\u0362\u0306a\u0310l\u0307go", "ǅ ﬁ ﬃ",
             "क्षत्रिय", "ภาษาไทย", "A\u030a vs Å", "i\u0307", "ñ vs n\u0303", "Ω vs Ω", "x\u20d7"]
SPACES = ["  ", "\t", "    ", " \t ", "\u00a0", "\u3000", "\u2003", "   \t\t  "]
SPECIAL = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "[CLS]", "[SEP]",
           "[MASK]", "<|eot_id|>", "<start_of_turn>", "<end_of_turn>", "<|begin_of_text|>", "<0x0A>", "▁"]


def lines() -> list[str]:
    rng = random.Random(20261201)
    english = [ln.strip() for ln in (ROOT / "slmpack/demo_data/heldout.txt").read_text(encoding="utf-8").splitlines()
               if ln.strip()]
    out: list[str] = []
    out += [english[i % len(english)] for i in range(N)]
    out += [" ".join(rng.sample(CODE, 2)).replace("\n", " ") for _ in range(N)]
    out += ["".join(rng.sample(CJK, 2)) + rng.choice(["", " ", "abc", "123"]) for _ in range(N)]
    out += [f"{rng.choice(english)[:40]} {''.join(rng.sample(EMOJI, 3))}" for _ in range(N)]
    out += [f"{rng.choice(RTL)} {rng.choice(['', 'abc ', '42 '])}{rng.choice(RTL)}" for _ in range(N)]
    out += [f"{rng.choice(COMBINING)} {rng.choice(COMBINING)}{rng.choice(['', ' word', '!'])}" for _ in range(N)]
    out += [rng.choice(SPACES) + rng.choice(english)[:30].replace(" ", rng.choice(SPACES)) + rng.choice(SPACES)
            for _ in range(N)]
    out += [f"{rng.choice(english)[:20]}{rng.choice(SPECIAL)}{rng.choice(['', ' ', 'x'])}{rng.choice(SPECIAL)}"
            for _ in range(N)]
    return [ln.replace("\n", " ").replace("\r", " ") for ln in out]


if __name__ == "__main__":
    path = ROOT / "slmpack/demo_data/tokenizer_corpus.txt"
    path.write_text("\n".join(lines()) + "\n", encoding="utf-8")
    print(f"{path}: {len(lines())} lines")

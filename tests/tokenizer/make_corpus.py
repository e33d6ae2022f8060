#!/usr/bin/python3
"""Builds tests/tokenizer/corpus.jsonl: one JSON string per line, mixed text for
the tokenizer parity test (C tokenizer vs transformers.js on the real Qwen3
tokenizer.json). Sources: files Debian installs (licenses, C headers, Python,
Perl, shell, CMake, JavaScript, gettext translations in ~30 languages) plus
hand-written edge cases (emoji, whitespace, contractions, added tokens inline,
combining marks that NFC changes, long words, numbers and dates).
Deterministic for a given set of installed files (fixed seed, sorted paths).
The committed corpus.jsonl is the reference; re-run only to extend it.

Left out on purpose (the Rust and JS reference tokenizers disagree there, and we
follow Rust, see worker/tokenizer/tokenizer.h): U+0085 and U+FEFF (whitespace in one and
not the other), "'\u017f" (Rust's case folding), U+0000 (the CLI's JSON input
stops at it), and characters PCRE2 10.42 (Unicode 14) does not know.

usage: /usr/bin/python3 make_corpus.py > corpus.jsonl
"""
import gettext
import glob
import json
import os
import random
import sys
import unicodedata

rng = random.Random(20250101)
out = []


def add(s):
    if not s or "\0" in s or "\u0085" in s or "\ufeff" in s or "\u017f" in s:
        return
    # skip characters unassigned in Unicode 14 (PCRE2 10.42's tables)
    if any(unicodedata.category(c) == "Cn" and not (0xE000 <= ord(c) <= 0xF8FF) for c in s):
        return
    if any(0xD800 <= ord(c) <= 0xDFFF for c in s):
        return
    out.append(s)


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return ""


def lines_of(paths, n, chunk_max=1):
    """n samples: single lines or chunks of up to chunk_max consecutive lines."""
    pool = []
    for p in paths:
        ls = read(p).split("\n")
        pool.append(ls)
    pool = [ls for ls in pool if len(ls) > 3]
    got = 0
    while got < n and pool:
        ls = rng.choice(pool)
        i = rng.randrange(len(ls))
        k = rng.randint(1, chunk_max)
        s = "\n".join(ls[i:i + k])
        if s.strip():
            add(s)
            got += 1


# ---------------------------------------------------------------- prose
lic = sorted(glob.glob("/usr/share/common-licenses/*"))
lines_of([p for p in lic if os.path.isfile(p)], 260, chunk_max=3)
copyrights = sorted(glob.glob("/usr/share/doc/*/copyright"))[:200]
lines_of(copyrights, 120, chunk_max=2)

# ---------------------------------------------------------------- code
lines_of(sorted(glob.glob("/usr/include/*.h")), 170, chunk_max=6)
lines_of(sorted(glob.glob("/usr/lib/python3.11/*.py")), 170, chunk_max=6)
lines_of(sorted(glob.glob("/usr/share/perl/5.36/*.pm")), 60, chunk_max=4)
lines_of(sorted(glob.glob("/usr/share/cmake-3.25/Modules/*.cmake"))[:120], 60, chunk_max=4)
lines_of(sorted(glob.glob("/usr/lib/node_modules/npm/lib/**/*.js", recursive=True))[:150], 80, chunk_max=5)
sh = [p for p in sorted(glob.glob("/usr/bin/*"))[:400] if read(p).startswith("#!/bin/sh")]
lines_of(sh, 60, chunk_max=4)

# ---------------------------------------------------------------- translations
LANGS = ["zh_CN", "zh_TW", "ja", "ko", "ar", "he", "fa", "hi", "bn", "ta", "th", "ru", "uk", "el",
         "vi", "ka", "am", "de", "fr", "es", "pl", "tr", "pt_BR", "cs", "hu", "fi", "sv", "km", "my",
         "ml", "te", "gu", "ne", "si"]
for lang in LANGS:
    msgs = []
    for mo in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
        try:
            with open(mo, "rb") as f:
                cat = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue
        for k, v in sorted(cat.items(), key=lambda kv: str(kv[0])):
            if isinstance(v, str) and v and not v.startswith("Project-Id"):
                msgs.append(v)
    rng.shuffle(msgs)
    for m in msgs[:24]:
        add(m)

# ---------------------------------------------------------------- numbers and dates
for _ in range(120):
    y, mo, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
    h, mi, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    forms = [f"{y}-{mo:02d}-{d:02d}", f"{d}/{mo}/{y}", f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z",
             f"{h}:{mi:02d} pm", f"{rng.randint(0, 10**9):,}", f"{rng.uniform(-1e6, 1e6):.4f}",
             f"{rng.random():.3e}", f"${rng.randint(1, 99999)}.{rng.randint(0, 99):02d}",
             f"{rng.randint(1, 100)}%", f"0x{rng.getrandbits(64):016x}", f"v{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
             f"{y}年{mo}月{d}日", f"{rng.randint(0, 999)}\u00a0km", f"+1 ({rng.randint(200, 999)}) 555-{rng.randint(1000, 9999)}"]
    add(" ".join(rng.sample(forms, rng.randint(1, 4))))
for n in ["0", "7", "42", "1234567890", "3.14159265358979323846", "1e-9", "-0.0", "١٢٣٤٥", "२०२५", "一二三",
          "Ⅻ", "½ ¾ ⅞", "²³¹", "①②③", "𝟘𝟙𝟚", "٣.١٤", "12,345,678.90", "1_000_000", "0b1011", "10^6"]:
    add(n)

# ---------------------------------------------------------------- hand-written edge cases
EMOJI = ["😀", "👍", "👍🏽", "👍🏿", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸🇫🇷", "❤️", "🤷‍♀️",
         "🧑🏾‍🚀", "😶‍🌫️", "🫠", "🐈‍⬛", "👁️‍🗨️", "✊🏼", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "1️⃣", "©️", "🫶🏻", "🧔‍♂️"]
for e in EMOJI:
    add(e)
    add(f"I {e} this")
    add(e * 3)
add(" ".join(EMOJI))
add("".join(EMOJI))

WS = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\u00a0", "\u3000", "\u2003", "\u2028",
      "\u2029", "\v", "\f", "\u200b", "\u180e", "\u202f"]
for w in WS:
    add(f"a{w}b")
    add(f"{w}start")
    add(f"end{w}")
    add(f"x{w}{w}{w}y")
    add(f"{w}")
add(" " * 40 + "indented")
add("\t" * 10 + "tabs")
add("line one\n\n\n\nline five")
add("trailing spaces    \nnext")
add("mixed \t \n \r\n \t end")
add("    def f(x):\n        return x\n")
add("a" + " " * 100 + "b")
add("\n" * 30)

for w in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]:
    for v in {w, w.upper(), w.capitalize(), w.swapcase()}:
        add(f"it{v} fine")
        add(f"I{v}")
        add(f"{v}")
add("I'm, you're, he's, we've, they'll, she'd, can't, won't")
add("I'M, YOU'RE, HE'S, WE'VE, THEY'LL, SHE'D, CAN'T, WON'T")
add("I'Ll sHe'S tHeY'rE wE'vE i'M i'D dON'T")
add("rock 'n' roll, 'quoted', '90s, o'clock, ma'am, y'all")
add("l'homme d'État, dell'arte, c'è")

SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
           "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|vision_start|>", "<|image_pad|>",
           "<tool_response>", "</tool_response>", "<|file_sep|>", "<|repo_name|>", "<|box_start|>"]
for t in SPECIAL:
    add(t)
    add(f"before{t}after")
    add(f"before {t} after")
    add(f"{t}\n{t}")
add("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
add("<think>\nLet me think step by step.\n</think>\n\nThe answer is 42.")
add("<think>\n\n</think>\n\n")
add("<|im_start|><|im_end|><think></think>")
add("<|im_start")
add("im_start|>")
add("<|im_end|")
add("<thinking>")
add("</think >")
add("<<think>>")
add("<|<|im_end|>|>")
add("text<|endoftext|>text<|endoftext|>")

COMB = ["e\u0301", "E\u0301", "a\u0308", "o\u0302\u0301", "A\u030a", "n\u0303", "c\u0327", "u\u031b\u0300",
        "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af", "\u212b", "\u2126", "\u212a",
        "\uf900", "\u0041\u0301\u0323", "\u0041\u0323\u0301", "q\u0307\u0323", "\u00e9", "\u0e40\u0e01\u0e49",
        "\u0915\u093c", "\u09c7\u09be", "\u0b47\u0b3e", "\u05d1\u05bc", "\u0627\u0653", "s\u0323\u0307",
        "Z\u030c", "\u03b1\u0301", "\u0439", "\u0438\u0306", "\u1e9b\u0323"]
for c in COMB:
    add(c)
    add(f"caf{c}")
    add(f"{c}{c} {c}")
add("Cafe\u0301 cre\u0300me bru\u0302le\u0301e, nai\u0308ve, Ångström \u212bngstro\u0308m")
add("Ti\u00ea\u0301ng Vi\u00ea\u0323t co\u0301 nhi\u00ea\u0300u da\u0302\u0301u")
add("e" + "\u0301" * 20)
add("\u0301\u0301 starts with combining marks")

LONG = ["Pneumonoultramicroscopicsilicovolcanoconiosis", "Donaudampfschifffahrtsgesellschaftskapitän",
        "Rindfleischetikettierungsüberwachungsaufgabenübertragungsgesetz", "supercalifragilisticexpialidocious",
        "antidisestablishmentarianism", "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
        "a" * 300, "ab" * 200, "xyz" * 150, "9" * 200, "-" * 120, "=" * 80, "_" * 64, "!?" * 50,
        "ababababababababababababababababab", "🙂" * 60, "中" * 100, "ـ" * 40,
        "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IHRoYXQgZ29lcyBvbiBhbmQgb24=",
        "https://example.com/some/very/long/path/with_underscores-and-dashes/and?query=string&x=1#frag",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "ThisIsAVeryLongCamelCaseIdentifierThatKeepsGoingAndGoingForeverAndEver",
        "snake_case_identifier_that_is_quite_long_and_has_many_parts_in_it_too"]
for w in LONG:
    add(w)
    add(f"The word {w} is long.")

MISC = [
    "Hello world", " Hello world", "Hello", "hello", "HELLO", "  Hello  ", "Hello, World!", "hello.world",
    "Ünïcödé", "ÀÉÎÕÜ àéîõü", "straße STRASSE", "İstanbul ıi", "ǅungla", "ﬁne ﬂow", "Ａ全角ａ", "ｶﾀｶﾅ",
    "日本語のテキストです。", "中文文本，包含标点符号！", "한국어 텍스트입니다.", "繁體中文測試",
    "العربية نص مع أرقام 123", "עברית עם ניקוד: שָׁלוֹם", "हिन्दी पाठ", "ไทยไม่มีช่องว่าง", "Ελληνικά κείμενα",
    "Русский текст, ёлка", "Tiếng Việt", "ქართული", "አማርኛ", "ᚠᚢᚦᚨᚱᚲ", "𝕳𝖊𝖑𝖑𝖔 𝓦𝓸𝓻𝓵𝓭", "ℌ𝔢𝔩𝔩𝔬",
    "∀x∈ℝ: x²≥0", "∑_{i=1}^{n} i = n(n+1)/2", "E = mc²", "a ≤ b ≠ c ≈ d", "→ ← ↑ ↓ ⇒ ⇔", "§ ¶ † ‡ • …",
    "«guillemets» „Anführung“ “curly” ‘single’", "—em dash– en dash ‐ hyphen", "© ® ™ ℃ ℉ µ Ω",
    "price: €12.50 £9 ¥1000 ₹500 ₿0.01", "C:\\Users\\name\\file.txt", "/usr/local/bin/python3 -m pip",
    "user@example.com", "@mention #hashtag $var %fmt ^caret &amp; *ptr", "<div class=\"x\">text</div>",
    "SELECT * FROM users WHERE id = 42;", "{\"key\": [1, 2.5, null, true], \"s\": \"\\u00e9\"}",
    "| col1 | col2 |\n|------|------|\n| a    | b    |", "# Title\n\n- item 1\n- item 2\n\n```c\nint x;\n```",
    "fn main() { println!(\"{}\", 1 + 2); }", "const f = (a, b) => a ?? b;", "x := <-ch // go",
    "#include <stdio.h>\nint main(void) { return 0; }", "for i in range(10):\n\tprint(i)",
    "lambda x: x**2 if x > 0 else -x", "std::vector<std::string> v{\"a\"};", "SELECT COUNT(*) AS n;",
    "$ echo $HOME && ls -la | grep '^d'", "git commit -m \"fix: don't crash\"", "a+=1;b-=2;c*=3;d/=4",
    "!!!???...,,,;;;:::", "((([[[{{{}}}]]])))", "~~~```'''\"\"\"", "....", "..", "...", " ...", "'",
    "''", "'''", " '", "' ", "\"'\"", "a'b'c'd", "'s's's", "''s", "1'2'3",
]
for m in MISC:
    add(m)

# ---------------------------------------------------------------- mixtures
pieces = list(out)
for _ in range(220):
    k = rng.randint(2, 4)
    parts = rng.sample(pieces, k)
    sep = rng.choice(["", " ", "\n", "\t", " ", "  ", rng.choice(SPECIAL), rng.choice(EMOJI)])
    add(sep.join(p[:200] for p in parts))

for s in out:
    sys.stdout.write(json.dumps(s, ensure_ascii=False) + "\n")
print(f"{len(out)} lines", file=sys.stderr)

#!/usr/bin/python3
"""Writes the seed/replay corpus for fuzz_tokenizer (tests/fuzz/corpus/tokenizer):
hand-picked tricky inputs. Fuzzer finds worth keeping are added as crash-*/
find-* files next to these. usage: /usr/bin/python3 make_tokenizer_corpus.py"""
import os

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "tokenizer")
os.makedirs(D, exist_ok=True)
u = lambda s: s.encode("utf-8")
CASES = {
    "empty": b"",
    "hello": b"Hello world",
    "chat": u("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    "added_adjacent": u("<|im_end|><|im_end|><think></think><|endoftext|>"),
    "added_partial": b"<|im_end|<|im_en<think<|",
    "added_longest_tiny": b"<a>><a>>><|end|>",
    "added_then_combining": u("<think>\u0338 <|im_end|>\u0338x"),  # '>' + U+0338 would compose to U+226F
    "kelvin_think": u("<thin\u212a>"),                             # NFC makes "<think>" after splitting
    "nfc_marks": u("e\u0301 A\u030a \u1100\u1161\u11a8 \u212b \uf900 q\u0307\u0323 \u0301start"),
    "emoji_zwj": u("👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈 🇯🇵 🏴󠁧󠁢󠁳󠁣󠁴󠁿"),
    "cjk_arabic": u("日本語 中文 한국어 العربية עברית"),
    "contractions": b"I'M you'Re they'LL 's 'S ''s '''",
    "whitespace": b" \t\n\r\n  \x0b\x0c \n\n\n   x   \r\r\n",
    "unicode_spaces": u("a\u00a0b\u3000c\u2028d\u2029e\u180ef\u0085g\ufeffh"),
    "digits": u("1234567890 ١٢٣ ②③ ½"),
    "nul_bytes": b"a\x00b\x00\x00<|im_end|>\x00",
    "invalid_ff": b"ok\xffno",
    "invalid_overlong": b"\xc0\x80\xe0\x80\x80\xf0\x80\x80\x80",
    "invalid_surrogate": b"\xed\xa0\x80\xed\xbf\xbf",
    "invalid_too_big": b"\xf4\x90\x80\x80\xf5\x80",
    "invalid_truncated_end": b"emoji \xf0\x9f\x98",
    "invalid_lone_continuation": b"\x80\xbf abc",
    "invalid_in_added": b"<|im_\xffend|>",
    "long_letters": b"a" * 5000,
    "long_spaces_then_word": b" " * 3000 + b"word",
    "long_newlines": b"\n" * 3000,
    "long_digits": b"7" * 3000,
    "long_punct": b"!?" * 2000,
    "mixed_runs": b"ab " * 1000 + b"\n\t" * 500,
    "bytes_all": bytes(range(256)),
    "ids_like": bytes([0x2b, 0x26, 0x00, 0x00, 0x1c, 0x50, 0x02, 0x00, 0xff, 0xff, 0xff, 0x7f]),
}
for name, data in CASES.items():
    with open(os.path.join(D, name), "wb") as f:
        f.write(data)
print(f"{len(CASES)} files in {D}")

#!/usr/bin/env python3
"""Writes tests/tok/corpus.txt: the tokenizer parity corpus (deterministic, seed 20261127).

Test tooling only. Lines mix English prose, code, numbers, whitespace runs, emoji, CJK,
accents (composed and decomposed), contractions in any case, special-token look-alikes, and
empty lines. Lines never contain '\\n'; some contain '\\r' and '\\t'.
"""
import random

rng = random.Random(20261127)

words = ("once upon a time there was little girl named Lily she loved to play outside park one day saw big red "
         "ball wanted with it but too high mom said let's go didn't know what do I'm sorry help her so the "
         "quick brown fox jumps over lazy dog attribution graph feature transcoder layer residual stream "
         "model token logit prune threshold").split()
names = ["Lily", "Tom", "Ben", "Sue", "Dallas", "Austin", "Texas", "California", "Zoë", "Renée", "José", "Øyvind"]
code = [
    "def f(x):", "    return x ** 2 + 1", "for (int i = 0; i < n; i++) { s += a[i]; }", "#include <stdio.h>",
    "local t = {1, 2, 3} -- comment", "if (a && !b) || c != d { return -1; }", "x = [i*i for i in range(10)]",
    "console.log(`value: ${v}`);", "SELECT * FROM users WHERE id = 42;", "\tindented\twith\ttabs",
    "    four spaces", "        eight spaces", "{\"key\": \"value\", \"n\": 3.14}", "<div class=\"a\">hi</div>",
    "a->b->c; p[0] = *q++;", "std::vector<int> v{1,2,3};", "fn main() { println!(\"hi\"); }",
]
emoji = ["😀", "🚀", "👍🏽", "❤️", "🇫🇷", "👨‍👩‍👧", "🤖", "✨", "🎉", "🔥"]
cjk = ["日本語のテキスト", "中文句子，带标点。", "한국어 문장입니다", "東京タワー", "漢字とかな", "你好，世界！",
       "ありがとうございます", "数学の問題を解く"]
accents = ["café", "naïve", "résumé", "Ångström", "façade", "crème brûlée", "São Paulo", "Dvořák", "Łódź",
           "cafe\u0301", "e\u0300le\u0300ve", "n\u0303o", "A\u030angstr\u00f6m", "\u1100\u1161\u11a8"]
specials = ["<s>", "</s>", "<bos>", "<eos>", "<|begin_of_text|>", "<|endoftext|>", "<|im_start|>", "<start_of_turn>",
            "<pad>", "<unk>", "<0x41>", "<mask>"]
contractions = ["it's", "IT'S", "don't", "DON'T", "we're", "WE'RE", "you've", "I'm", "I'M", "we'll", "WE'LL", "he'd",
                "HE'D", "'s", "'T", "O'Neil", "rock'n'roll"]
punct = list(".,;:!?-—–…()[]{}\"'«»“”‘’/\\|@#$%^&*+=~`<>")
spaces = [" ", "  ", "   ", "\t", " \t ", "\u00a0", "\u3000", "\u2009", "\r", " \r "]


def number():
    k = rng.randrange(6)
    if k == 0: return str(rng.randrange(10))
    if k == 1: return str(rng.randrange(10 ** rng.randrange(1, 12)))
    if k == 2: return f"{rng.uniform(-1000, 1000):.{rng.randrange(1, 6)}f}"
    if k == 3: return f"{rng.randrange(1, 13)}/{rng.randrange(1, 29)}/20{rng.randrange(10, 30)}"
    if k == 4: return f"{rng.randrange(1000):,}".replace(",", rng.choice([",", " ", "."])) + str(rng.randrange(1000))
    return "٣٤٥" if rng.random() < 0.5 else "①②③ ½ ²"


def piece():
    k = rng.random()
    if k < 0.45: return rng.choice(words)
    if k < 0.52: return rng.choice(names)
    if k < 0.60: return number()
    if k < 0.66: return rng.choice(contractions)
    if k < 0.72: return rng.choice(punct) * rng.randrange(1, 4)
    if k < 0.76: return rng.choice(emoji)
    if k < 0.81: return rng.choice(cjk)
    if k < 0.86: return rng.choice(accents)
    if k < 0.89: return rng.choice(specials)
    if k < 0.94: return rng.choice(words).upper()
    return rng.choice(words).capitalize()


def line():
    k = rng.random()
    if k < 0.04: return ""
    if k < 0.08: return rng.choice(spaces) * rng.randrange(1, 5)
    if k < 0.20: return rng.choice(code)
    out = []
    for _ in range(rng.randrange(1, 25)):
        out.append(piece())
        out.append(" " if rng.random() < 0.8 else rng.choice(spaces))
    s = "".join(out)
    if rng.random() < 0.3: s = s.strip()
    return s


lines = []
# fixed lines first: the classic prompts and edge cases
lines += ["Once upon a time, there was a little girl named Lily. She",
          "Fact: the capital of the state containing Dallas is",
          "The National Digital Analytics Group (N", "", " ", "  leading", "trailing  ", "a\tb", "x\ry",
          "1234567890123", "3.14159", "Ünïcödé", "🙂🙃", "   \t  ", "''", "'s's's", "don't DON'T Don'T",
          "日本語", "e\u0301", "<s>hello</s>", "<|begin_of_text|>Hi<|endoftext|>", "<bos><start_of_turn>user"]
while len(lines) < 5200:
    lines.append(line())
with open("tests/tok/corpus.txt", "w", encoding="utf-8", newline="") as f:
    f.write("\n".join(lines))
print(len(lines), "lines")

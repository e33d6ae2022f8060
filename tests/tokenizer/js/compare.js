// compare.js — compares two JSONL files of id arrays line by line; prints
// "lines N tokens T mismatches M" and the first mismatches with the input text.
// usage: node compare.js CORPUS_JSONL EXPECTED_JSONL ACTUAL_JSONL
"use strict";
const fs = require("fs");
const read = (p) => {
  const l = fs.readFileSync(p, "utf8").split("\n");
  if (l.length && l[l.length - 1] === "") l.pop();
  return l;
};
const [corpus, want, got] = process.argv.slice(2).map(read);
let tokens = 0, bad = 0;
if (want.length !== corpus.length || got.length !== corpus.length) {
  console.log(`line counts differ: corpus ${corpus.length}, expected ${want.length}, actual ${got.length}`);
  process.exit(1);
}
for (let i = 0; i < corpus.length; i++) {
  const w = JSON.parse(want[i]);
  tokens += w.length;
  if (want[i] !== got[i]) {
    if (++bad <= 10) {
      console.log(`line ${i + 1}: ${corpus[i].slice(0, 200)}`);
      console.log(`  transformers.js: ${want[i].slice(0, 300)}`);
      console.log(`  kvtier:          ${got[i].slice(0, 300)}`);
    }
  }
}
console.log(`lines ${corpus.length} tokens ${tokens} mismatches ${bad}`);
process.exit(bad ? 1 : 0);

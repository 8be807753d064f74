// Prints the code points that Hugging Face `tokenizers` treats as punctuation (its Punctuation
// pre-tokenizer splits them off) and as numeric (its Digits pre-tokenizer), as ranges ready for
// kHfPunctuation / kHfNumeric in engine/tokenizer/pre_tokenizer_sequence.cc:
//   NODE_PATH=/tmp/tokref/node_modules node hf_char_class_probe.js models/gpt-neox-20b/tokenizer.json
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

const base = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const withPre = (pre) =>
  Tokenizer.fromString(JSON.stringify(Object.assign({}, base, { pre_tokenizer: pre }))).getPreTokenizer();
const punct = withPre({ type: 'Punctuation', behavior: 'Isolated' });
const digits = withPre({ type: 'Digits', individual_digits: true });
const ranges = { kHfPunctuation: [], kHfNumeric: [] };
const add = (list, c) => {
  if (list.length && list[list.length - 1][1] + 1 === c) list[list.length - 1][1] = c; else list.push([c, c]);
};
for (let c = 1; c <= 0x10FFFF; ++c) {
  if (c >= 0xD800 && c <= 0xDFFF) continue;
  const ch = String.fromCodePoint(c);
  if (punct.preTokenizeString('x' + ch).length === 2) add(ranges.kHfPunctuation, c);
  if (digits.preTokenizeString('x' + ch).length === 2) add(ranges.kHfNumeric, c);
}
for (const [name, list] of Object.entries(ranges)) {
  const hex = (c) => '0x' + c.toString(16).toUpperCase();
  console.log(`constexpr char32_t ${name}[][2] = {`);
  console.log(list.map(([a, b]) => `{${hex(a)}, ${hex(b)}}`).join(', ') + '};');
}

// Helper of tokenizer_differential_test.cc (PerCodePointClassesAndNfc): for every Unicode
// scalar value, how Hugging Face `tokenizers` classifies it in the GPT-2 split pattern and how
// its NFC normalizer treats it. The tables kExtraLetters / kExtraNumbers (pre_tokenizer.cc) and
// kInertForHf (normalizer.cc) are what this output differs in from PCRE2 and utf8proc.
//   NODE_PATH=/tmp/tokref/node_modules node hf_unicode_probe.js TOKENIZER_JSON OUT
// OUT: one line per code point: "<hex> <L|N|O|S> <JSON of NFC('a' c U+0301 c U+0323 c U+1161 c U+0300)>"
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

const [tokPath, outPath] = process.argv.slice(2);
const tok = Tokenizer.fromFile(tokPath);
const pre = tok.getPreTokenizer();
const nfc = tok.getNormalizer();
const fd = fs.openSync(outPath, 'w');
let buffer = [];
for (let c = 1; c <= 0x10FFFF; ++c) {
  if (c >= 0xD800 && c <= 0xDFFF) continue;
  const ch = String.fromCodePoint(c);
  let cls = 'S';
  if (pre.preTokenizeString('x' + ch).length === 1) cls = 'L';
  else if (pre.preTokenizeString('1' + ch).length === 1) cls = 'N';
  else if (pre.preTokenizeString('!' + ch).length === 1) cls = 'O';
  const probe = 'a' + ch + '\u0301' + ch + '\u0323' + ch + '\u1161' + ch + '\u0300';
  buffer.push(`${c.toString(16)} ${cls} ${JSON.stringify(nfc.normalizeString(probe))}`);
  if (buffer.length === 65536) { fs.writeSync(fd, buffer.join('\n') + '\n'); buffer = []; }
}
fs.writeSync(fd, buffer.join('\n') + '\n');
fs.closeSync(fd);

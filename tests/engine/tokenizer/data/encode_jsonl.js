// Helper of tokenizer_differential_test.cc: encodes texts with Hugging Face `tokenizers`.
//   NODE_PATH=/tmp/tokref/node_modules node encode_jsonl.js TOKENIZER_JSON IN_JSONL OUT_JSONL
// IN has one JSON string per line; OUT gets, per line, [ids, decode(ids, false)].
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [tokPath, inPath, outPath] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(tokPath);
  const texts = fs.readFileSync(inPath, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
  const out = [];
  for (let i = 0; i < texts.length; i += 512) {
    const batch = texts.slice(i, i + 512);
    const encodings = await tok.encodeBatch(batch, { addSpecialTokens: false });
    const ids = encodings.map((e) => e.getIds());
    const decoded = await tok.decodeBatch(ids, false);
    for (let j = 0; j < batch.length; ++j) out.push(JSON.stringify([ids[j], decoded[j]]));
  }
  fs.writeFileSync(outPath, out.join('\n') + '\n');
}
main().catch((e) => { console.error(e); process.exit(1); });

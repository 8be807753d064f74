// Encoding throughput of Hugging Face `tokenizers` (npm package, Rust core), single-threaded,
// on the same inputs as mamba-tokenizer-bench, for engine/tokenizer/PERF_NOTES.md.
//
//   mkdir -p /tmp/tokref && (cd /tmp/tokref && npm install tokenizers@0.23.2)
//   build/bin/mamba-tokenizer-bench --write-inputs /tmp/benchin ...    # writes the inputs
//   RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false NODE_PATH=/tmp/tokref/node_modules \
//     node tests/engine/tokenizer/data/bench_npm.js models/gpt-neox-20b/tokenizer.json \
//     /tmp/benchin/english.txt /tmp/benchin/whitespace_emoji.txt [more files]
//
// Each input is encoded whole, and as consecutive DOC_BYTES-byte documents (default 4096), each
// repeatedly for MIN_SECONDS (default 3); best and median MB/s are printed.
// The time includes the N-API call and building the JS Encoding object, which is small next
// to encoding megabytes of text (reported separately as "overhead" on a 1-byte input).
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const MIN_SECONDS = Number(process.env.MIN_SECONDS || 3);
const DOC_BYTES = Number(process.env.DOC_BYTES || 4096);

// The input cut into documents of about DOC_BYTES bytes (at the next character boundary), as
// mamba-tokenizer-bench cuts it.
function splitDocs(text) {
  const buf = Buffer.from(text, 'utf8');
  const docs = [];
  for (let i = 0; i < buf.length;) {
    let j = Math.min(buf.length, i + DOC_BYTES);
    while (j < buf.length && (buf[j] & 0xC0) === 0x80) ++j;
    docs.push(buf.subarray(i, j).toString('utf8'));
    i = j;
  }
  return docs;
}

async function measure(fn, bytes) {
  const rates = [];
  const start = process.hrtime.bigint();
  while (rates.length < 3 || Number(process.hrtime.bigint() - start) / 1e9 < MIN_SECONDS) {
    const t0 = process.hrtime.bigint();
    await fn();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push(bytes / 1e6 / seconds);
  }
  rates.sort((a, b) => a - b);
  return [rates[rates.length - 1], rates[Math.floor(rates.length / 2)]];
}

async function main() {
  const [tokPath, ...files] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(tokPath);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 1000; ++i) await tok.encode('a', null, { addSpecialTokens: false });
  console.log(`overhead per call: ${(Number(process.hrtime.bigint() - t0) / 1e6 / 1000).toFixed(3)} ms`);
  console.log(`input                       bytes     tokens  encode MB/s     (median)   ${DOC_BYTES}-byte docs MB/s (median)`);
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    const bytes = Buffer.byteLength(text, 'utf8');
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    const [best, median] = await measure(() => tok.encode(text, null, { addSpecialTokens: false }), bytes);
    const docs = splitDocs(text);
    const [docBest, docMedian] = await measure(async () => {
      for (const d of docs) await tok.encode(d, null, { addSpecialTokens: false });
    }, bytes);
    console.log(`${path.basename(file).padEnd(22)} ${String(bytes).padStart(10)} ${String(enc.getIds().length).padStart(10)} ` +
                `${best.toFixed(1).padStart(12)} ${median.toFixed(1).padStart(12)} ${docBest.toFixed(1).padStart(12)} ${docMedian.toFixed(1).padStart(12)}`);
  }
}
main().catch((e) => { console.error(e); process.exit(1); });

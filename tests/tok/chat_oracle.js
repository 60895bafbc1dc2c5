// chat_oracle.js - token ids of rendered chats from @huggingface/tokenizers (the official
// JavaScript implementation), no special tokens added (the template writes them), as
// transformers' apply_chat_template tokenizes. Input: one JSON string per line, or an ERROR line
// (passed through as ERROR).
//   node chat_oracle.js <dir holding tokenizer.json and tokenizer_config.json> rendered.txt
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, 'node_modules/@huggingface/tokenizers'));

const [dir, file] = process.argv.slice(2);
const tok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'))),
                          JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'))));
const out = [];
for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
  if (line === '') continue;
  out.push(line.startsWith('ERROR') ? 'ERROR' : tok.encode(JSON.parse(line), { add_special_tokens: false }).ids.join(' '));
}
process.stdout.write(out.join('\n') + '\n');

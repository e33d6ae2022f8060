// openai_client.mjs - the official `openai` npm client against a running
// `kvtier-worker serve --http-listen` (fixture model, greedy by default).
// usage: node openai_client.mjs BASE_URL API_KEY MODEL_ID METRICS_OUT
// Exits non-zero on the first failed check; prints one line per check.
import OpenAI from 'openai';
import { writeFileSync } from 'node:fs';

const [base, apiKey, modelId, metricsOut] = process.argv.slice(2);
const root = base.replace(/\/v1$/, '');
const client = new OpenAI({ baseURL: base, apiKey, maxRetries: 0, timeout: 120000 });
let failures = 0;

function check(cond, what) {
  if (cond) {
    console.log(`ok   ${what}`);
  } else {
    console.log(`FAIL ${what}`);
    failures++;
  }
}

async function expectError(fn, status, what) {
  try {
    await fn();
    check(false, `${what}: expected HTTP ${status}, got success`);
  } catch (e) {
    check(e instanceof OpenAI.APIError && e.status === status && typeof e.message === 'string' &&
              e.error && typeof e.error.message === 'string',
          `${what}: HTTP ${e.status} ${e.error ? e.error.type : ''}: ${e.error ? e.error.message : e}`);
  }
}

async function metric(name, labels) {
  const r = await fetch(`${root}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } });
  const text = await r.text();
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') && labels.every((l) => line.includes(l)))
      return Number(line.split(' ').pop());
  }
  return NaN;
}

const prompt = 'The capital of France is';

// ---- models, health
const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === modelId, `models.list -> ${models.data[0].id}`);
const health = await fetch(`${root}/health`);
check(health.status === 200, 'GET /health -> 200 without a key');

// ---- completions: non-streamed and streamed give the same greedy text
const c1 = await client.completions.create({ model: modelId, prompt, max_tokens: 24, temperature: 0 });
check(c1.object === 'text_completion' && c1.choices.length === 1 && c1.choices[0].text.length > 0,
      `completions: "${c1.choices[0].text.slice(0, 40)}"`);
check(c1.usage.completion_tokens === 24 && c1.choices[0].finish_reason === 'length',
      'completions: 24 tokens, finish_reason length');
check(c1.kvtier && typeof c1.kvtier.blocks_recalled === 'number', 'completions: kvtier stats object');
let streamed = '';
let chunks = 0;
let finish = null;
const s1 = await client.completions.create({ model: modelId, prompt, max_tokens: 24, temperature: 0, stream: true });
for await (const ch of s1) {
  chunks++;
  streamed += ch.choices[0].text;
  if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
}
check(streamed === c1.choices[0].text && chunks > 2 && finish === 'length',
      `completions stream: ${chunks} chunks, same text as non-streamed`);

// ---- a stop string taken from the greedy text ends it there, without the stop
const full = c1.choices[0].text;
const cut = Math.floor(full.length / 2);
const stop = full.slice(cut, cut + 3);
if (stop.trim().length === 3) {
  const c2 = await client.completions.create({ model: modelId, prompt, max_tokens: 24, temperature: 0, stop: [stop] });
  check(c2.choices[0].text === full.slice(0, full.indexOf(stop)) && c2.choices[0].finish_reason === 'stop' &&
            c2.choices[0].stop_reason === stop,
        `stop "${stop}": text ends before it, finish_reason stop, stop_reason given`);
}

// ---- chat: streamed with usage == non-streamed
const msgs = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Name a colour.' }];
const k1 = await client.chat.completions.create({ model: modelId, messages: msgs, max_tokens: 16 });
check(k1.object === 'chat.completion' && k1.choices[0].message.role === 'assistant' &&
          k1.choices[0].message.content.length > 0,
      `chat: "${k1.choices[0].message.content.slice(0, 40).replace(/\n/g, '\\n')}"`);
let chat = '';
let usage = null;
let role = null;
const ks = await client.chat.completions.create({
  model: modelId, messages: msgs, max_tokens: 16, stream: true, stream_options: { include_usage: true },
});
for await (const ch of ks) {
  if (ch.usage) usage = ch.usage;
  if (!ch.choices.length) continue;
  if (ch.choices[0].delta.role) role = ch.choices[0].delta.role;
  chat += ch.choices[0].delta.content || '';
}
check(chat === k1.choices[0].message.content && role === 'assistant', 'chat stream: same text, role first');
check(usage && usage.completion_tokens === k1.usage.completion_tokens &&
          usage.prompt_tokens === k1.usage.prompt_tokens,
      `chat stream usage chunk: ${usage && usage.prompt_tokens}+${usage && usage.completion_tokens}`);

// ---- logprobs: greedy picks the top alternative
const lp = await client.chat.completions.create({
  model: modelId, messages: msgs, max_tokens: 6, logprobs: true, top_logprobs: 3, temperature: 0,
});
const content = lp.choices[0].logprobs.content;
check(content.length === lp.usage.completion_tokens &&
          content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 3 &&
                               Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6),
      `chat logprobs: ${content.length} tokens, 3 alternatives, greedy = top`);
const clp = await client.completions.create({ model: modelId, prompt, max_tokens: 4, logprobs: 2 });
check(clp.choices[0].logprobs.tokens.length === 4 && clp.choices[0].logprobs.token_logprobs.length === 4 &&
          clp.choices[0].logprobs.tokens.join('') === clp.choices[0].text,
      'completions logprobs: tokens spell the text');

// ---- seeded sampling is reproducible
const a = await client.completions.create({ model: modelId, prompt, max_tokens: 16, temperature: 0.9, seed: 7 });
const b = await client.completions.create({ model: modelId, prompt, max_tokens: 16, temperature: 0.9, seed: 7 });
check(a.choices[0].text === b.choices[0].text, 'seed 7 twice: same sampled text');

// ---- the kvtier extension: a tiny hot budget demotes blocks, same greedy text
const t1 = await client.completions.create({
  model: modelId, prompt: 'one two three four five six seven eight nine ten '.repeat(12), max_tokens: 24,
  kvtier: { hot_budget_blocks: 3, policy: 'tier', mode: 'exact' },
});
const t2 = await client.completions.create({
  model: modelId, prompt: 'one two three four five six seven eight nine ten '.repeat(12), max_tokens: 24,
  kvtier: { policy: 'full' },
});
check(t1.kvtier.blocks_demoted_host + t1.kvtier.blocks_demoted_ssd > 0 && t1.choices[0].text === t2.choices[0].text,
      `kvtier hot_budget_blocks 3: ${t1.kvtier.blocks_demoted_host} demoted, ${t1.kvtier.blocks_recalled} recalled, text == full cache`);

// ---- errors in OpenAI's shape
await expectError(() => client.completions.create({ model: modelId, prompt, n: 2 }), 400, 'n=2');
await expectError(() => client.completions.create({ model: 'no-such-model', prompt }), 404, 'unknown model');
await expectError(() => client.completions.create({ model: modelId, prompt, temperature: -1 }), 400, 'temperature -1');
await expectError(() => client.chat.completions.create({ model: modelId, messages: [] }), 400, 'empty messages');
await expectError(() => client.chat.completions.create({ model: modelId, messages: [{ role: 'wizard', content: 'x' }] }),
                  400, 'unknown role');
await expectError(() => client.completions.create({ model: modelId, prompt, max_tokens: 100000000 }), 400, 'max_tokens too large');
await expectError(() => client.completions.create({ model: modelId, prompt, kvtier: { mode: 'sometimes' } }), 400,
                  'kvtier.mode unknown');
const bad = new OpenAI({ baseURL: base, apiKey: 'wrong-key', maxRetries: 0 });
await expectError(() => bad.completions.create({ model: modelId, prompt }), 401, 'wrong API key');
let r = await fetch(`${root}/v1/completions`, { headers: { Authorization: `Bearer ${apiKey}` } });
check(r.status === 405, `GET /v1/completions -> ${r.status}`);
r = await fetch(`${root}/v1/nothing`, { headers: { Authorization: `Bearer ${apiKey}` } });
check(r.status === 404 && (await r.json()).error.type === 'not_found_error', 'unknown route -> 404 error object');
r = await fetch(`${base}/completions`, {
  method: 'POST', headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' }, body: '{"prompt": ',
});
check(r.status === 400 && (await r.json()).error.message.includes('JSON'), 'malformed JSON -> 400');

// ---- tokenize / detokenize round trip
r = await fetch(`${root}/tokenize`, {
  method: 'POST', headers: { Authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ prompt: 'hello world' }),
});
const tk = await r.json();
r = await fetch(`${root}/detokenize`, {
  method: 'POST', headers: { Authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ tokens: tk.tokens }),
});
check((await r.json()).prompt === 'hello world' && tk.count === tk.tokens.length, `tokenize: ${tk.count} ids, detokenize back`);

// ---- a cancelled stream stops the generation and is counted as cancelled
const cancelledBefore = await metric('kvtier_worker_generations_total', ['result="cancelled"']);
const ctl = new AbortController();
const long = await client.completions.create(
  { model: modelId, prompt, max_tokens: 900, stream: true, kvtier: { policy: 'full' } }, { signal: ctl.signal });
let got = 0;
try {
  for await (const ch of long) {
    if (++got === 3) ctl.abort();
  }
} catch (e) {
  // the abort surfaces as an error of the iterator
}
let cancelledAfter = cancelledBefore;
for (let i = 0; i < 100 && cancelledAfter === cancelledBefore; i++) {
  await new Promise((res) => setTimeout(res, 100));
  cancelledAfter = await metric('kvtier_worker_generations_total', ['result="cancelled"']);
}
check(cancelledAfter === cancelledBefore + 1, `aborted stream after ${got} chunks counted cancelled`);

// ---- 100 concurrent requests: all served, greedy answers identical
const t0 = Date.now();
const many = await Promise.allSettled(Array.from({ length: 100 }, () =>
  client.completions.create({ model: modelId, prompt, max_tokens: 8, temperature: 0 })));
const okAll = many.filter((x) => x.status === 'fulfilled');
const texts = new Set(okAll.map((x) => x.value.choices[0].text));
check(okAll.length === 100 && texts.size === 1,
      `100 concurrent completions: ${okAll.length} ok, ${texts.size} distinct text(s), ${Date.now() - t0} ms`);
const ttft = await metric('kvtier_worker_time_to_first_token_seconds_count', []);
check(ttft >= 100, `time_to_first_token histogram counted ${ttft}`);

r = await fetch(`${root}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } });
writeFileSync(metricsOut, await r.text());

console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);

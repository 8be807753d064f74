// MambaServe against the client libraries people use, pinned in package-lock.json: the official
// OpenAI SDK, Hugging Face's inference client and the official gRPC Node client (+ proto-loader
// on proto/). Starts mamba-server on the bundled demo model; run by run.sh (ctest: compat_test).
// Env: MAMBA_SERVER (binary), MAMBA_SOURCE_DIR (repository root).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import OpenAI from 'openai';
import { InferenceClient } from '@huggingface/inference';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
const source = process.env.MAMBA_SOURCE_DIR ?? path.resolve(here, '../..');
const MODEL = 'kjv-mamba-4x192';
const PROMPT = 'And God said';

let server;
let tmp;
let http;  // "http://127.0.0.1:PORT"
let grpcTarget;

async function waitForReady(file, child, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (child.exitCode !== null) throw new Error(`mamba-server exited with ${child.exitCode}`);
    if (existsSync(file)) {
      try {
        return JSON.parse(readFileSync(file, 'utf8'));
      } catch {
        // written but not complete yet
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('mamba-server did not become ready');
}

before(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), 'mamba-compat-'));
  const ready = path.join(tmp, 'ready.json');
  server = spawn(process.env.MAMBA_SERVER, [
    '--model', path.join(source, 'models', MODEL), '--host', '127.0.0.1', '--http-port', '0',
    '--grpc-port', '0', '--slots', '4', '--ready-file', ready, '--log-level', 'warn',
  ], { stdio: ['ignore', 'inherit', 'inherit'] });
  const ports = await waitForReady(ready, server, 60_000);
  http = `http://127.0.0.1:${ports.http_port}`;
  grpcTarget = `127.0.0.1:${ports.grpc_port}`;
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await exited;
    assert.equal(server.exitCode, 0, 'mamba-server drains and exits 0');
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function openai() {
  return new OpenAI({ baseURL: `${http}/v1`, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });
}

describe('openai SDK', () => {
  test('models.list reports the model and its vocabularies', async () => {
    const page = await openai().models.list();
    const ids = page.data.map((m) => m.id);
    assert.deepEqual(ids, [MODEL]);
    assert.equal(page.data[0].vocab_size, 50280);
    assert.equal(page.data[0].tokenizer_vocab_size, 50277);
  });

  test('completions.create unary', async () => {
    const r = await openai().completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 30, temperature: 0,
    });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, MODEL);
    assert.equal(r.choices.length, 1);
    // The demo model's README: greedy "And God said" continues " unto him, Go, and let us go."
    assert.match(r.choices[0].text, /^ unto him, Go, and let us go\./);
    assert.equal(r.usage.prompt_tokens, 3);
    assert.equal(r.usage.completion_tokens + r.usage.prompt_tokens, r.usage.total_tokens);
  });

  test('stream with stream_options.include_usage equals unary', async () => {
    const client = openai();
    const unary = await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0,
    });
    const stream = await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0, stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage = null;
    let finish = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(text, unary.choices[0].text);
    assert.equal(finish, unary.choices[0].finish_reason);
    assert.deepEqual(usage.completion_tokens, unary.usage.completion_tokens);
    assert.equal(usage.prompt_tokens, 3);
  });

  test('logprobs', async () => {
    const r = await openai().completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 5, temperature: 0, logprobs: 3,
    });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, r.usage.completion_tokens);
    assert.equal(lp.token_logprobs.length, lp.tokens.length);
    assert.equal(lp.text_offset.length, lp.tokens.length);
    for (let i = 0; i < lp.tokens.length; ++i) {
      assert.ok(lp.token_logprobs[i] <= 0);
      const top = Object.entries(lp.top_logprobs[i]);
      assert.equal(top.length, 3);
      // Greedy: the chosen token is the best alternative.
      assert.equal(Math.max(...top.map(([, v]) => v)), lp.token_logprobs[i]);
    }
    assert.equal(lp.tokens.join(''), r.choices[0].text);
  });

  test('list prompts times n', async () => {
    const r = await openai().completions.create({
      model: MODEL, prompt: ['In the beginning', 'And it came to pass'], n: 2, max_tokens: 4,
      temperature: 0.8, seed: 1,
    });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
    for (const c of r.choices) assert.equal(typeof c.text, 'string');
  });

  test('logit_bias, best_of and user', async () => {
    const client = openai();
    const r = await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 3, temperature: 0, logprobs: 0,
      logit_bias: { 25: 100 }, user: 'compat-test',
    });
    const tokens = r.choices[0].logprobs.tokens;
    assert.equal(tokens.length, 3);
    assert.equal(new Set(tokens).size, 1, `+100 on one id forces it: ${tokens}`);
    const best = await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 6, n: 2, best_of: 4, seed: 3,
    });
    assert.equal(best.choices.length, 2);
  });

  test('any model name is served (one model, not --strict-model-name)', async () => {
    const r = await openai().completions.create({
      model: 'gpt-3.5-turbo-instruct', prompt: PROMPT, max_tokens: 2, temperature: 0,
    });
    assert.equal(r.model, MODEL);
  });

  test('bad input raises the SDK error classes', async () => {
    const client = openai();
    const bad = [
      [{ temperature: -1 }, 'temperature'],
      [{ max_tokens: 0 }, 'max_tokens'],
      [{ logit_bias: { abc: 1 } }, 'logit_bias'],
      [{ logit_bias: { 50280: 1 } }, 'logit_bias'],
      [{ n: 2, best_of: 1 }, 'best_of'],
      [{ top_p: 2 }, 'top_p'],
    ];
    for (const [fields, param] of bad) {
      await assert.rejects(
        client.completions.create({ model: MODEL, prompt: PROMPT, ...fields }),
        (e) => {
          assert.ok(e instanceof OpenAI.BadRequestError, `${JSON.stringify(fields)}: ${e}`);
          assert.equal(e.status, 400);
          assert.equal(e.param, param);
          return true;
        });
    }
    await assert.rejects(client.models.retrieve('no-such-model'), OpenAI.NotFoundError);
    const long = 'And '.repeat(70000);
    await assert.rejects(
      client.completions.create({ model: MODEL, prompt: long, max_tokens: 1 }),
      (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
  });
});

describe('@huggingface/inference', () => {
  test('textGeneration against the server URL', async () => {
    const hf = new InferenceClient();
    const out = await hf.textGeneration({
      endpointUrl: http, inputs: PROMPT, parameters: { max_new_tokens: 30, temperature: 0 },
    });
    assert.match(out.generated_text, /^ unto him, Go, and let us go\./);
  });

  test('textGenerationStream against the server URL', async () => {
    const hf = new InferenceClient();
    let text = '';
    let events = 0;
    for await (const ev of hf.textGenerationStream({
      endpointUrl: http, inputs: PROMPT, parameters: { max_new_tokens: 12, temperature: 0 },
    })) {
      ++events;
      // OpenAI completion chunks from /v1/completions (TGI's events carry `token`).
      text += ev.choices?.[0]?.text ?? ev.token?.text ?? '';
    }
    assert.ok(events > 0);
    assert.match(text, /^ unto him, Go, and let us go\./);
  });
});

describe('@grpc/grpc-js + @grpc/proto-loader on proto/', () => {
  const load = (file, dirs) => grpc.loadPackageDefinition(protoLoader.loadSync(file, {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: dirs,
  }));
  const mambaStub = () => {
    const pkg = load('mamba/v1/mamba.proto', [path.join(source, 'proto')]);
    return new pkg.mamba.v1.MambaService(grpcTarget, grpc.credentials.createInsecure());
  };
  const unary = (stub, method, req) => new Promise((resolve, reject) => {
    stub[method](req, { deadline: Date.now() + 60_000 }, (err, res) => (err ? reject(err) : resolve(res)));
  });

  test('Generate', async () => {
    const r = await unary(mambaStub(), 'Generate', {
      text: PROMPT, sampling: { temperature: 0 }, stopping: { max_new_tokens: 30 },
    });
    assert.equal(r.completions.length, 1);
    assert.match(r.completions[0].text, /^ unto him, Go, and let us go\./);
    assert.equal(r.completions[0].end.finish_reason, 'FINISH_REASON_LENGTH');
    assert.equal(Number(r.usage.prompt_tokens), 3);
  });

  test('GenerateStream equals Generate', async () => {
    const stub = mambaStub();
    const req = { text: PROMPT, sampling: { temperature: 0 }, stopping: { max_new_tokens: 10 } };
    const want = await unary(stub, 'Generate', req);
    const call = stub.GenerateStream(req, { deadline: Date.now() + 60_000 });
    let text = '';
    let ends = 0;
    for await (const m of call) {
      text += m.text;
      if (m.end) ++ends;
    }
    assert.equal(ends, 1);
    assert.equal(text, want.completions[0].text);
  });

  test('health', async () => {
    const pkg = load('health.proto', [here]);
    const health = new pkg.grpc.health.v1.Health(grpcTarget, grpc.credentials.createInsecure());
    for (const service of ['', 'mamba.v1.MambaService']) {
      const r = await unary(health, 'Check', { service });
      assert.equal(r.status, 'SERVING');
    }
  });

  test('an error carries its status code', async () => {
    await assert.rejects(
      unary(mambaStub(), 'Generate', { text: PROMPT, sampling: { temperature: -1 } }),
      (e) => e.code === grpc.status.INVALID_ARGUMENT && /temperature/.test(e.details));
    await assert.rejects(
      unary(mambaStub(), 'Generate', { text: PROMPT, sampling: { logit_bias: { 50280: 1 } } }),
      (e) => e.code === grpc.status.INVALID_ARGUMENT && /logit_bias/.test(e.details));
  });
});

// The agent tools through a real MCP client (the official TypeScript SDK): over stdio against
// `tensor-surgeon mcp`, and over streamable HTTP at /mcp of the running web server, checked
// against the CLI on the same model. Then an agent's proposal reviewed in the browser.
import { test, expect } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { paths } from './paths.mjs';
import { cli, resetSession, openView, cellCenter, pixel, waitPixelChange, mcpClient, openTab } from './helpers.mjs';

const EMBED = 'model.embed_tokens.weight';
const NORM = 'model.layers.3.post_attention_layernorm.weight';
const OUTLIER = 'model.layers.2.self_attn.o_proj.weight';
const TOOLS = ['ablate', 'causal_trace', 'compare_tokens', 'control_vector', 'edit_fact', 'edit_facts', 'export_adapter',
  'extract_adapter', 'find_outliers', 'list_patch', 'list_tensors', 'nearest_tokens', 'project_rows', 'propose_edit',
  'read_adapter', 'read_values', 'run_prompt', 'steer', 'tensor_info', 'tensor_stats', 'top_neurons', 'undo'];

/** Calls a tool; returns [parsed JSON or text, isError]. */
async function call(client, name, args = {}) {
  const r = await client.callTool({ name, arguments: args });
  const text = r.content.map((c) => c.text).join('');
  let value = text;
  try {
    value = JSON.parse(text);
  } catch {
    // error messages are plain text
  }
  return [value, Boolean(r.isError)];
}

/** Every check a tool set must pass against the CLI on `model`. */
async function checkTools(client, model) {
  const tools = (await client.listTools()).tools;
  expect(tools.map((t) => t.name).sort()).toEqual(TOOLS);
  for (const t of tools) {
    expect(t.description.length).toBeGreaterThan(40);
    expect(t.inputSchema.type).toBe('object');
  }
  // The demo has no config.json: running it is a tool error that says what is missing.
  const [why, failed] = await call(client, 'run_prompt', { prompt: 'hello' });
  expect(failed).toBe(true);
  expect(why).toContain('config.json');
  const propose = tools.find((t) => t.name === 'propose_edit').inputSchema;
  expect(propose.required).toEqual(expect.arrayContaining(['tensor', 'spec', 'op', 'hypothesis']));

  const listed = cli('inspect', model, '--json').tensors;
  let [v, err] = await call(client, 'list_tensors');
  expect(err).toBe(false);
  expect(v.total).toBe(listed.length);
  [v] = await call(client, 'list_tensors', { filter: 'o_proj', limit: 2, offset: 1 });
  expect(v.total).toBe(4);
  expect(v.tensors.map((t) => t.name)).toEqual(listed.filter((t) => t.name.includes('o_proj')).slice(1, 3).map((t) => t.name));
  [v] = await call(client, 'list_tensors', { filter: '/layers\\.2\\..*o_proj/' });
  expect(v.tensors.map((t) => t.name)).toEqual([OUTLIER]);

  [v] = await call(client, 'tensor_info', { tensor: 'lm_head.weight' });
  const info = listed.find((t) => t.name === 'lm_head.weight');
  expect([v.dtype, v.shape, v.data_offsets]).toEqual([info.dtype, info.shape, info.data_offsets]);
  expect(v.token_dims).toEqual([0]);

  [v] = await call(client, 'tensor_stats', { tensor: NORM });
  expect(v.summary).toEqual(cli('stats', model, NORM, '--json').summary);

  [v] = await call(client, 'read_values', { tensor: EMBED, spec: '7,0:4' });
  const slice = cli('slice', model, EMBED, '7,0:4', '--json');
  expect([v.shape, v.values, v.hex]).toEqual([slice.shape, slice.values, slice.hex]);
  [v, err] = await call(client, 'read_values', { tensor: EMBED, spec: '0:100' });
  expect(err).toBe(true);
  expect(v).toContain('narrow the spec');
  [v, err] = await call(client, 'read_values', { tensor: EMBED, spec: '9999' });
  expect(err).toBe(true);
  expect(v).toContain('index 9999 out of bounds for dim 0 of size 2048');

  [v] = await call(client, 'find_outliers');
  expect(v.flagged.map((f) => f.tensor).sort()).toEqual([OUTLIER, NORM].sort());
  expect(v.sibling_outliers[0].outliers).toEqual([OUTLIER]);

  [v] = await call(client, 'nearest_tokens', { token: ' Paris', k: 5 });
  const near = cli('tokens', model, '--nearest', ' Paris', '--k', '5', '--json');
  expect(v.neighbors.map((n) => [n.row, n.token])).toEqual(near.neighbors.map((n) => [n.row, n.token]));
  [v] = await call(client, 'compare_tokens', { a: ' Paris', b: '#1001' });
  expect(v.cosine).toBeCloseTo(cli('tokens', model, '--compare', ' Paris', ' London', '--json').cosine, 9);
  [v, err] = await call(client, 'nearest_tokens', { token: ' Parisian' });
  expect(err).toBe(true);
  expect(v).toContain('not a token');

  // A UMAP of the embedding: the CLI's layout (same seed), summarised as clusters.
  [v, err] = await call(client, 'project_rows', { method: 'umap', iterations: 60, clusters: 5, points: 3 });
  expect(err).toBe(false);
  const umap = cli('project', model, EMBED, '--method', 'umap', '--iterations', '60', '--json');
  expect([v.tensor, v.method, v.n, v.iterations]).toEqual([EMBED, 'umap', 2048, 60]);
  expect(v.points.map((p) => p.at)).toEqual(umap.points.slice(0, 3));
  expect(v.points.map((p) => p.token)).toEqual(umap.labels.slice(0, 3));
  expect(v.clusters.length).toBe(5);
  expect(v.clusters.reduce((n, c) => n + c.size, 0)).toBe(2048);
  expect(v.clusters.every((c) => c.members.length === Math.min(12, c.size) && c.members.every((m) => typeof m.token === 'string'))).toBe(true);
  [v, err] = await call(client, 'project_rows', { method: 'isomap' });
  expect([err, v]).toEqual([true, 'method "isomap": use pca, tsne or umap']);

  // Bad arguments come back as errors; the server keeps serving.
  [v, err] = await call(client, 'tensor_info', { tensor: 'nope' });
  expect([err, v]).toEqual([true, 'no tensor named "nope"']);
  let threw = false;
  try {
    const r = await client.callTool({ name: 'tensor_stats', arguments: { tensr: NORM } });
    threw = Boolean(r.isError);
  } catch {
    threw = true;
  }
  expect(threw).toBe(true);

  // Resources: the model summary and the current patch.
  const resources = (await client.listResources()).resources.map((r) => r.uri).sort();
  expect(resources).toEqual(['tensor-surgeon://model', 'tensor-surgeon://patch']);
  const summary = JSON.parse((await client.readResource({ uri: 'tensor-surgeon://model' })).contents[0].text);
  expect(summary.tensors.length).toBe(listed.length);
}

/** A proposal is pending: reads are unchanged until it is accepted. */
async function checkProposal(client, model) {
  const before = cli('slice', model, EMBED, '2,3', '--json').values[0];
  let [v, err] = await call(client, 'propose_edit', { tensor: EMBED, spec: '2,3', op: { op: 'set', value: '5' }, hypothesis: 'cell [2,3] drives the token' });
  expect(err).toBe(false);
  expect(v.status).toBe('pending');
  const id = v.id;
  [v] = await call(client, 'read_values', { tensor: EMBED, spec: '2,3' });
  expect(v.values[0]).toBe(before);
  [v] = await call(client, 'list_patch');
  expect(v.pending.map((p) => [p.id, p.origin.hypothesis])).toEqual([[id, 'cell [2,3] drives the token']]);
  expect(v.total_elements).toBe(0);
  // The UI's messages, as tool errors.
  [v, err] = await call(client, 'propose_edit', { tensor: 'model.layers.0.mlp.up_proj.weight', spec: '0,0', op: { op: 'set', value: '300' }, hypothesis: 'too big' });
  expect(err).toBe(true);
  expect(v).toContain('300');
  [v, err] = await call(client, 'propose_edit', { tensor: EMBED, spec: '2,3', op: { op: 'zero' }, hypothesis: ' ' });
  expect([err, v]).toEqual([true, 'say what the edit tests: the hypothesis is required']);
  return id;
}

test('the MCP tools over stdio, checked against the CLI', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ts-mcp-'));
  try {
    execFileSync(paths.bin, ['demo', '--out', dir]);
    const client = new Client({ name: 'tensor-surgeon-tests', version: '1.0.0' });
    await client.connect(new StdioClientTransport({ command: paths.bin, args: ['mcp', dir], stderr: 'pipe' }));
    try {
      await checkTools(client, dir);
      await checkProposal(client, dir);
      const [v] = await call(client, 'undo');
      expect(v.can_undo).toBe(false);
    } finally {
      await client.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const httpClient = mcpClient;

test.describe('over HTTP at /mcp', () => {
  test.beforeEach(async ({ request }) => {
    await resetSession(request);
    for (const p of (await (await request.get('/api/session')).json()).pending) {
      await request.post('/api/resolve', { data: { id: p.id, accept: false } });
    }
  });

  test('the same tools, sharing the web session', async ({ request, baseURL }) => {
    const client = await httpClient(baseURL);
    try {
      await checkTools(client, paths.model);
      const id = await checkProposal(client, paths.model);
      const session = await (await request.get('/api/session')).json();
      expect(session.pending.map((p) => p.id)).toEqual([id]);
    } finally {
      await client.close();
    }
    // Another site's page may not call the tools, nor may a client without the token.
    const r = await request.post('/mcp', { headers: { Origin: 'https://evil.example', 'Content-Type': 'application/json' }, data: {} });
    expect(r.status()).toBe(403);
    await expect(httpClient(baseURL, 'not-the-token')).rejects.toThrow(/needs its access token/);
  });

  test("an agent's undo takes back its own edit, never a person's", async ({ request, baseURL }) => {
    const cell = async () => Number((await (await request.get(`/api/cell?${new URLSearchParams({ tensor: EMBED, index: '2,3' })}`)).json()).value);
    const base = await cell();
    expect((await request.post('/api/edit', { data: { request: { tensor: EMBED, spec: '2,3', op: { op: 'set', value: '2' } } } })).ok()).toBeTruthy();
    const client = await httpClient(baseURL);
    try {
      let [v, err] = await call(client, 'undo');
      expect(err).toBe(true);
      expect(v).toContain('an agent may undo only its own edits');
      expect(await cell()).toBe(2);
      [v] = await call(client, 'propose_edit', { tensor: EMBED, spec: '2,3', op: { op: 'set', value: '5' }, hypothesis: 'five' });
      expect((await request.post('/api/resolve', { data: { id: v.id, accept: true } })).ok()).toBeTruthy();
      expect(await cell()).toBe(5);
      [v, err] = await call(client, 'undo');
      expect(err).toBe(false);
      expect(v.can_undo).toBe(true);
      expect(await cell()).toBe(2);
      // The person's edit is next: the agent may not take it back.
      [v, err] = await call(client, 'undo');
      expect(err).toBe(true);
      expect(await cell()).toBe(2);
    } finally {
      await client.close();
    }
    expect(base).not.toBe(2);
  });

  test('a proposal shows up in the open page as pending; accepting it updates the heatmap', async ({ page, baseURL }) => {
    await openView(page, '?' + new URLSearchParams({ t: EMBED, ys: '0:8', xs: '0:8' }));
    const p = await cellCenter(page, 8, 8, 2, 3);
    const before = await pixel(page, p.x, p.y);
    const client = await httpClient(baseURL);
    try {
      const [v] = await call(client, 'propose_edit', { tensor: EMBED, spec: '2,3', op: { op: 'set', value: '5' }, hypothesis: 'cell [2,3] is the switch' });
      expect(v.status).toBe('pending');
    } finally {
      await client.close();
    }
    const item = page.locator('.pending li');
    await expect(item).toHaveCount(1);
    await expect(item).toContainText('agent: cell [2,3] is the switch');
    expect(await pixel(page, p.x, p.y)).toEqual(before);
    await openTab(page, 'Patch');
    await item.locator('button.accept').click();
    await waitPixelChange(page, p, before);
    await expect(page.locator('.pending li')).toHaveCount(0);
    await expect(page.locator('.patch-panel .entries td.origin')).toHaveText('agent: cell [2,3] is the switch');
  });
});

// Running the model in the browser, on a real language model (SmolLM2-135M, served by the
// second test server): the prompt's next tokens on the base and the edited model side by side,
// an edit that swaps two embedding rows flipping the edited model's answer while the base keeps
// its own, the probe table showing the change (efficacy) and the locality KL, undo bringing
// both back together; and a top neuron opening its down_proj column.
import { test, expect } from '@playwright/test';
import { llmPort } from '../playwright.config.mjs';
import { resetSession, mcpClient, openTab, cli } from './helpers.mjs';

test.use({ baseURL: `http://127.0.0.1:${llmPort}` });
test.describe.configure({ timeout: 240_000 });

const EMBED = 'model.embed_tokens.weight';
const PROMPT = 'The capital of France is';

test.beforeEach(async ({ request }) => resetSession(request));

/** The id of a one-token text, from the server's token search. */
async function tokenId(request, text) {
  const hits = await (await request.get(`/api/tokens/search?${new URLSearchParams({ q: text })}`)).json();
  expect(hits[0].token).toBe(text);
  return hits[0].id;
}

async function open(page) {
  await page.goto('/?tab=run');
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await expect(page.locator('.run-panel .run-prompt')).toBeVisible({ timeout: 60_000 });
}

test('the top-k shows each probability as a bar, and the form keeps its fields on tidy lines', async ({ page }) => {
  for (const size of [{ width: 1600, height: 1000 }, { width: 1280, height: 720 }]) {
    await page.setViewportSize(size);
    await open(page);
    await page.locator('.run-prompt').fill(PROMPT);
    await page.getByRole('button', { name: 'run prompt', exact: true }).click();
    const rows = page.locator('.run-outcome .run-side.base tr');
    await expect(rows.first()).toBeVisible({ timeout: 60_000 });
    // What a person sees: each bar as long, within its cell, as the probability beside it.
    const bars = await rows.evaluateAll((trs) => trs.map((tr) => ({
      p: Number(tr.querySelector('td.num').textContent),
      bar: tr.querySelector('.bar').getBoundingClientRect().width,
      cell: tr.querySelector('td.bar-cell').getBoundingClientRect().width,
    })));
    expect(bars.length).toBeGreaterThan(3);
    expect(bars[0].bar).toBeGreaterThan(20);
    for (const b of bars) {
      expect(Math.abs(b.bar / (b.cell - 8) - b.p), JSON.stringify(b)).toBeLessThan(0.03);
    }
    // The prompt spans the form; below it the fields on one line, the actions on the next,
    // each line starting at the form's left edge.
    const box = async (sel) => page.locator(sel).boundingBox();
    const [form, prompt, fields, topk, target, actions, run, generate] = await Promise.all(
      ['.run-form:has(.run-prompt)', '.run-prompt', '.run-form .run-fields', '.run-topk', '.run-target-token', '.run-form .run-actions',
        '.run-button', '.generate-button'].map(box),
    );
    expect(prompt.width).toBeGreaterThan(form.width - 4);
    expect(Math.abs(topk.y - target.y)).toBeLessThan(4);
    expect(Math.abs(run.y - generate.y)).toBeLessThan(4);
    expect(fields.y).toBeGreaterThan(prompt.y + prompt.height - 1);
    expect(actions.y).toBeGreaterThanOrEqual(fields.y + fields.height);
    for (const line of [fields, actions]) expect(Math.abs(line.x - form.x)).toBeLessThan(2);
    expect(target.x + target.width).toBeLessThanOrEqual(form.x + form.width + 1);
  }
});

test('a causal trace streams its three maps; hover tells p and the indirect effect; an MLP cell opens its down_proj and picks the fact editor\'s layer; the computed edit is reviewed, accepted and undone', async ({ page }) => {
  test.setTimeout(480_000);
  await open(page);
  await page.locator('.run-prompt').fill(PROMPT);
  await page.locator('.trace-subject').fill('France');
  await page.locator('.trace-samples').fill('2');
  await page.getByRole('button', { name: 'trace', exact: true }).click();
  await expect(page.locator('.trace-summary')).toContainText('p(" Paris")', { timeout: 60_000 });
  for (const kind of ['residual', 'mlp', 'attention']) {
    await expect(page.locator(`.trace-map.${kind}`)).toHaveAttribute('data-layers', '30', { timeout: 120_000 });
  }
  await expect(page.locator('.trace-summary')).toHaveAttribute('data-running', 'false');
  await expect(page.locator('.trace-summary')).toContainText('90 of 90 rows');
  // The maps open large over the workspace: at 1600 x 1000 a 30-layer map's cells are at least
  // 12 px wide and its tokens' rows tall enough to label; hover works there too.
  const docked = page.viewportSize();
  await page.setViewportSize({ width: 1600, height: 1000 });
  await page.locator('button.trace-large').click();
  await expect(page.locator('.trace-panel')).toHaveClass(/\blarge\b/);
  const big = page.locator('.trace-map.mlp canvas');
  const bigBox = await big.boundingBox();
  expect(bigBox.width / 30).toBeGreaterThanOrEqual(12);
  expect(bigBox.y + bigBox.height).toBeLessThanOrEqual(1000);
  await big.hover({ position: { x: bigBox.width * 0.5, y: bigBox.height * 0.5 } });
  await expect(page.locator('.trace-map.mlp .trace-hover')).toHaveText(/^layer \d+, token \d+ ".*": p = /);
  await page.locator('button.trace-large').click();
  await expect(page.locator('.trace-panel')).not.toHaveClass(/\blarge\b/);
  await page.setViewportSize(docked);
  // Hover a cell: its layer, token, p and indirect effect.
  const mlp = page.locator('.trace-map.mlp canvas');
  const box = await mlp.boundingBox();
  await mlp.hover({ position: { x: box.width * 0.45, y: box.height * 0.5 } });
  const hover = page.locator('.trace-map.mlp .trace-hover');
  await expect(hover).toHaveText(/^layer (\d+), token \d+ ".*": p = \d\.\d{4}, indirect effect [+-]\d\.\d{4} \(click: open its down_proj, edit a fact there\)$/);
  const layer = (await hover.textContent()).match(/^layer (\d+)/)[1];
  await mlp.click({ position: { x: box.width * 0.45, y: box.height * 0.5 } });
  await expect(page).toHaveURL(new RegExp(`t=model\\.layers\\.${layer}\\.mlp\\.down_proj\\.weight`));
  // The fact editor takes that layer; the edit it computes waits as a proposal with its probes.
  await expect(page.locator('.fact-layer')).toHaveValue(layer);
  await page.locator('.fact-target').fill(' Rome');
  // Neighbours whose answer should stay: the report marks those the edit spills over to.
  await page.locator('.fact-more summary').click();
  await page.locator('.fact-neighbors').fill('The capital of Germany is\nThe capital of Spain is');
  await page.getByRole('button', { name: 'compute the edit', exact: true }).click();
  const outcome = page.locator('.fact-outcome');
  await expect(outcome).toBeVisible({ timeout: 200_000 });
  await expect(outcome).toContainText(`layer ${layer} (model.layers.${layer}.mlp.down_proj.weight)`);
  await expect(outcome.locator('.fact-scores')).toContainText('efficacy 100%');
  const row = outcome.locator('.fact-probes tr.prompt');
  await expect(row.locator('td').nth(3)).toHaveText('" Paris"');
  expect(Number(await row.locator('td.edited-new').textContent())).toBeGreaterThan(0.5);
  await expect(outcome.locator('.fact-generation code.edited')).toHaveText(/^ Rome/);
  await expect(outcome.locator('.fact-probes tr.neighbor')).toHaveCount(2);
  // A neighbour row is marked when the new target beats its own answer, and the warning
  // counts the marked rows.
  let spilled = 0;
  for (const r of await outcome.locator('.fact-probes tr.neighbor').all()) {
    const cells = await r.locator('td').allTextContents();
    const wins = Number(cells[2]) > Number(cells[5]);
    await expect(r).toHaveClass(wins ? /\bspilled\b/ : /^neighbor$/);
    spilled += wins ? 1 : 0;
  }
  const kept = `neighbourhood ${(100 * (2 - spilled) / 2).toFixed(0)}%`;
  await expect(outcome.locator('.fact-scores')).toContainText(kept);
  if (spilled > 0) {
    await expect(outcome.locator('.fact-spill')).toContainText(`${spilled} of 2 neighbours now prefer " Rome"`);
  } else {
    await expect(outcome.locator('.fact-spill')).toHaveCount(0);
  }
  // Before accepting: the proposal's own delta view (the session with it, minus without).
  const tensor = `model.layers.${layer}.mlp.down_proj.weight`;
  const id = await outcome.getAttribute('data-proposal');
  await outcome.locator('button.preview').click();
  await expect(page).toHaveURL(new RegExp(`[?&]proposal=${id}(&|$)`));
  await expect(page).toHaveURL(/[?&]show=delta/);
  await expect(page.locator('.preview-note')).toContainText(`previewing proposal #${id} (not applied)`);
  await expect(page.locator('.heatmap .view-status')).toHaveAttribute('data-changed', /^[1-9]\d*$/, { timeout: 60_000 });
  // Accepted in the Patch tab: the edited model answers " Rome"; undo gives the base back.
  const item = page.locator('.pending li');
  await expect(item).toHaveCount(1);
  await expect(item).toContainText(`low_rank model.layers.${layer}.mlp.down_proj.weight`);
  await openTab(page, 'Patch');
  await item.locator('button.accept').click();
  await expect(page.locator('.pending li')).toHaveCount(0);
  // The preview ends with the proposal.
  await expect(page).not.toHaveURL(/[?&]proposal=/);
  await expect(page.locator('.preview-note')).toHaveCount(0);
  // The accepted edit is one low-rank entry, not a million element rows; it opens its delta.
  const entry = page.locator(`.low-rank-entries tr[data-tensor="${tensor}"]`);
  await expect(entry.locator('.rank')).toHaveText('rank 1');
  expect(Number(await entry.locator('td').nth(2).innerText())).toBeGreaterThan(500_000);
  await expect(page.locator('table.entries tbody tr')).toHaveCount(0);
  await entry.locator('button.open-delta').click();
  await expect(page).toHaveURL(/[?&]show=delta/);
  await expect(page).toHaveURL(new RegExp(`[?&]t=${tensor.replaceAll('.', '\\.')}(&|$)`));
  await openTab(page, 'Run');
  await page.getByRole('button', { name: 'run prompt', exact: true }).click();
  await expect(page.locator('.run-outcome .run-side.edited')).toHaveAttribute('data-top1', ' Rome', { timeout: 60_000 });
  await page.locator('.history button.undo').click();
  await expect(page.locator('.history button.undo')).toBeDisabled();
  await openTab(page, 'Patch');
  await expect(page.locator('.low-rank-entries')).toHaveCount(0);
});

test('the ablation form projects a direction out, shows what it did, saves it and loads it as a layer', async ({ page }) => {
  const from = ['The capital of France is', 'The Eiffel Tower is located in the city of', 'The Louvre museum is in',
    'The French government sits in the city of', 'The largest city in France is', 'The river Seine flows through the city of'];
  const to = ['The capital of Germany is', 'The Colosseum is located in the city of', 'The Prado museum is in',
    'The British government sits in the city of', 'The largest city in Japan is', 'The river Thames flows through the city of'];
  await open(page);
  await page.locator('.ablate-from').fill(from.join('\n'));
  await page.locator('.ablate-to').fill(to.join('\n'));
  await page.locator('.ablate-tokens').fill('" Paris"');
  await page.locator('.ablate-layer').fill('10');
  await page.locator('.ablate-save-as').fill('paris-e2e');
  await page.locator('.ablate-button').click();
  const outcome = page.locator('.ablation-outcome');
  await expect(outcome).toHaveAttribute('data-saved', 'paris-e2e.json', { timeout: 200_000 });
  // The held-out prompts (every other one) lose " Paris"; their continuations are listed.
  const summary = await outcome.locator('.ablate-summary').textContent();
  const [, before, after] = summary.match(/^layer 10, strength 1: p\(tokens\) (\d\.\d+) -> (\d\.\d+) on 3 held-out/);
  expect(Number(after)).toBeLessThan(Number(before) / 10);
  await expect(outcome.locator('.ablate-continuations li')).toHaveCount(3);
  // Loaded as a layer, the edited model no longer answers " Paris"; the layer is in the Patch tab.
  await outcome.locator('.ablate-load').click();
  await expect(outcome).toContainText('loaded', { timeout: 60_000 });
  await page.locator('.run-prompt').fill(from[1]);
  await page.getByRole('button', { name: 'run prompt', exact: true }).click();
  await expect(page.locator('.run-outcome .run-side.base')).toHaveAttribute('data-top1', ' Paris', { timeout: 60_000 });
  const edited = page.locator('.run-outcome .run-side.edited[data-top1]');
  await expect(edited).toBeVisible();
  await expect(edited).not.toHaveAttribute('data-top1', ' Paris');
  await openTab(page, 'Patch');
  // (The session's view of a layer of 32 million changed elements takes seconds to build.)
  await expect(page.locator('ul.layers li[data-layer="paris-e2e.json"]')).toBeVisible({ timeout: 90_000 });
});

test('an embedding swap flips the edited answer, the probes show it, undo restores it', async ({ page, request }) => {
  const paris = await tokenId(request, ' Paris');
  const london = await tokenId(request, ' London');
  await open(page);
  await page.locator('.run-prompt').fill(PROMPT);
  await page.getByRole('button', { name: 'run prompt', exact: true }).click();
  const base = page.locator('.run-outcome .run-side.base');
  await expect(base).toHaveAttribute('data-top1', ' Paris', { timeout: 60_000 });
  await expect(page.locator('.run-outcome .run-side.edited.same')).toBeVisible();

  // Probes: the edit's target, and an unrelated prompt to watch for collateral damage.
  await page.locator('.probe-target').fill(' Paris');
  await page.locator('.probe-kind').selectOption('expect');
  await page.getByRole('button', { name: 'add the prompt as a probe' }).click();
  await page.locator('.run-prompt').fill('The largest planet in the solar system is');
  await page.locator('.probe-target').fill('');
  await page.locator('.probe-kind').selectOption('unrelated');
  await page.getByRole('button', { name: 'add the prompt as a probe' }).click();
  await page.locator('.run-prompt').fill(PROMPT);
  const expectRow = page.locator('.probe-row[data-kind="expect"]');
  const unrelated = page.locator('.probe-row[data-kind="unrelated"]');
  await expect(expectRow).not.toHaveAttribute('data-base', '', { timeout: 60_000 });
  const before = Number(await expectRow.getAttribute('data-base'));
  expect(before).toBeGreaterThan(0.5);
  expect(Number(await expectRow.getAttribute('data-edited'))).toBeCloseTo(before, 6);
  expect(Number(await unrelated.getAttribute('data-kl'))).toBe(0);

  // Swap the two rows with the region panel: open " Paris"'s row from the tokens panel.
  await openTab(page, 'Tokens');
  await page.locator('.token-search').fill(' Paris');
  await page.locator('.token-search').press('Enter');
  await page.locator(`.token-hits a[data-id="${paris}"]`).click();
  await expect(page).toHaveURL(new RegExp(`t=${EMBED.replaceAll('.', '\\.')}`));
  await openTab(page, 'Region');
  await page.getByLabel('region op', { exact: true }).selectOption('swap_rows');
  await page.getByLabel('region argument').fill(String(london));
  await page.locator('.region-apply').click();
  await expect(page.locator('.region-error')).toHaveCount(0);

  // The run re-ran by itself: the edited model now says " London", the base still " Paris".
  await openTab(page, 'Run');
  const edited = page.locator('.run-outcome .run-side.edited:not(.same)');
  await expect(edited).toHaveAttribute('data-top1', ' London', { timeout: 60_000 });
  await expect(base).toHaveAttribute('data-top1', ' Paris');
  expect(Number(await page.locator('.run-outcome').getAttribute('data-kl'))).toBeGreaterThan(0.1);
  // The probe table followed: the target's probability fell; the unrelated prompt moved little.
  await expect.poll(async () => Number(await expectRow.getAttribute('data-edited')), { timeout: 60_000 }).toBeLessThan(before / 2);
  expect(Number(await expectRow.getAttribute('data-base'))).toBeCloseTo(before, 6);
  const kl = Number(await unrelated.getAttribute('data-kl'));
  expect(kl).toBeGreaterThanOrEqual(0);
  expect(kl).toBeLessThan(0.5);
  await expect(unrelated.locator('td').nth(6)).toHaveText(/^\d+\.\d{5}$/);

  // The patch and its probes, saved together under one name beside the patches.
  await page.locator('.probes-name').fill('paris-london');
  await page.locator('.probes-name').press('Tab');
  await page.getByRole('button', { name: 'save patch with probes' }).click();
  await expect(page.locator('.probe-note')).toContainText('paris-london.probes.json');
  expect(await (await request.get('/api/saved_patches')).json()).toContain('paris-london.json');
  const saved = await (await request.get('/api/probes/load?name=paris-london')).json();
  expect(saved.probes.map((p) => p.kind)).toEqual(['expect', 'unrelated']);

  // Undo (in the header): everything re-runs, and both sides agree again.
  await page.locator('.history button.undo').click();
  // Every edit undone: the edited model is the base again.
  await expect(page.locator('.run-outcome .run-side.edited.same')).toBeVisible({ timeout: 60_000 });
  await expect(base).toHaveAttribute('data-top1', ' Paris');
  expect(Number(await page.locator('.run-outcome').getAttribute('data-kl'))).toBe(0);
  await expect(expectRow).toHaveAttribute('data-kl', '0', { timeout: 60_000 });
  expect(Number(await expectRow.getAttribute('data-edited'))).toBeCloseTo(before, 6);
});

test('a continuation streams token by token and stops on request', async ({ page }) => {
  await open(page);
  await page.locator('.run-prompt').fill('Once upon a time');
  await page.locator('.run-tokens').fill('200');
  await page.locator('.run-tokens').press('Tab');
  await page.getByRole('button', { name: 'generate', exact: true }).click();
  const box = page.locator('.continuations');
  await expect.poll(async () => Number(await box.getAttribute('data-count')), { timeout: 60_000 }).toBeGreaterThan(2);
  await page.getByRole('button', { name: 'stop', exact: true }).click();
  await expect(box).toHaveAttribute('data-running', 'false');
  const stopped = Number(await box.getAttribute('data-count'));
  expect(stopped).toBeLessThan(200);
  await page.waitForTimeout(1500);
  expect(Number(await box.getAttribute('data-count'))).toBe(stopped);
  expect((await box.locator('.continuation.base pre').textContent()).length).toBeGreaterThan(3);
});

test('a top neuron opens its down_proj column, selected', async ({ page }) => {
  await open(page);
  await page.locator('.run-prompt').fill(PROMPT);
  await page.locator('.activation-layer').fill('12');
  await page.locator('.activation-layer').press('Tab');
  await page.getByRole('button', { name: "capture the prompt's activations" }).click();
  const first = page.locator('.top-neurons tr.neuron').first();
  await expect(first).toBeVisible({ timeout: 60_000 });
  const neuron = Number(await first.getAttribute('data-neuron'));
  const map = page.locator('canvas.activation-map');
  await expect(map).toBeVisible();
  await expect(page.locator('.logit-lens tr')).toHaveCount(30);
  // The attention output of the same layer, on the same heatmap: hover names the hidden dim.
  await page.getByLabel('activations shown').selectOption('attention');
  const box = await map.boundingBox();
  await map.hover({ position: { x: box.width * 0.5, y: box.height * 0.5 } });
  await expect(page.locator('.activation-hover')).toContainText('hidden dim');
  await page.getByLabel('activations shown').selectOption('mlp');
  await map.hover({ position: { x: box.width * 0.5, y: box.height * 0.5 } });
  await expect(page.locator('.activation-hover')).toContainText('neuron');
  await first.locator('a.open-down').click();
  await expect(page).toHaveURL(/t=model\.layers\.12\.mlp\.down_proj\.weight/);
  // The selection is that whole column (576 rows), ready for the edit panel.
  await expect(page.locator('.edit-panel .target')).toHaveText(
    `model.layers.12.mlp.down_proj.weight[0:576:1,${neuron}:${neuron + 1}:1]`, { timeout: 30_000 });
  // The last layer's logit lens is the model's answer; its token opens the unembedding row
  // (SmolLM2 ties it to the embedding).
  const top = page.locator('.logit-lens tr[data-layer="29"] a.lens-token').first();
  await expect(top).toContainText('" Paris"');
  const id = Number(await top.getAttribute('data-id'));
  await top.click();
  await expect(page).toHaveURL(/t=model\.embed_tokens\.weight/);
  await expect(page.locator('.edit-panel .target')).toHaveText(`model.embed_tokens.weight[${id}:${id + 1}:1,0:1:1]`);
  await expect(page.locator('.inspector .cell-index')).toHaveText(`[${id}, 0]`);
});

test('an agent tests a hypothesis before and after its edit over MCP', async ({ request, baseURL }) => {
  const paris = await tokenId(request, ' Paris');
  const client = await mcpClient(baseURL);
  const call = async (name, args) => {
    const r = await client.callTool({ name, arguments: args });
    expect(r.isError, r.content.map((c) => c.text).join('')).toBeFalsy();
    return JSON.parse(r.content.map((c) => c.text).join(''));
  };
  try {
    let run = await call('run_prompt', { prompt: PROMPT, target: ' Paris', generate: 3 });
    expect(run.base.top[0].token).toBe(' Paris');
    expect(run.edited).toBeNull();
    expect(run.base.continuation.ids.length).toBe(3);
    const neurons = await call('top_neurons', { prompt: PROMPT, layer: 12, k: 3 });
    expect(neurons.neurons.length).toBe(3);
    expect(neurons.neurons[0].down_proj_column).toBe(`model.layers.12.mlp.down_proj.weight[:, ${neurons.neurons[0].neuron}]`);
    expect(neurons.logit_lens.length).toBe(30);
    // Where does the model keep the answer? The causal trace over MCP is the CLI's, cell for cell.
    const trace = await call('causal_trace', { prompt: PROMPT, subject: 'France', samples: 2, kinds: ['mlp'] });
    expect(trace.target.token).toBe(' Paris');
    expect(trace.residual).toBeUndefined();
    expect(trace.mlp.length).toBe(30);
    const model = (await (await request.get('/api/model')).json()).path;
    const fromCli = cli('trace', model, '--prompt', PROMPT, '--subject', 'France', '--samples', '2', '--kind', 'mlp', '--json');
    expect(trace).toEqual(fromCli);
    // Hypothesis: the answer lives in " Paris"'s embedding row. Zero it; a person accepts.
    const proposal = await call('propose_edit', {
      tensor: EMBED, spec: `${paris},:`, op: { op: 'zero' }, hypothesis: "the answer lives in ' Paris''s embedding row",
    });
    expect(proposal.status).toBe('pending');
    run = await call('run_prompt', { prompt: PROMPT, target: ' Paris' });
    expect(run.edited).toBeNull(); // pending edits change nothing
    expect((await request.post('/api/resolve', { data: { id: proposal.id, accept: true } })).ok()).toBeTruthy();
    run = await call('run_prompt', { prompt: PROMPT, target: ' Paris' });
    expect(run.base.top[0].token).toBe(' Paris');
    expect(run.edited.top[0].token).not.toBe(' Paris');
    expect(run.edited.target.prob).toBeLessThan(run.base.target.prob / 2);
    await call('undo', {});
    run = await call('run_prompt', { prompt: PROMPT, target: ' Paris' });
    expect(run.edited).toBeNull(); // undone: the edited model is the base again
    expect(run.kl).toBe(0);
  } finally {
    await client.close();
  }
});

test('an agent rewrites a fact: the computed edit waits as a proposal, a person accepts it in the page, undo takes it back', async ({ page, request, baseURL }) => {
  const client = await mcpClient(baseURL);
  const call = async (name, args) => {
    const r = await client.callTool({ name, arguments: args }, undefined, { timeout: 200_000 });
    expect(r.isError, r.content.map((c) => c.text).join('')).toBeFalsy();
    return JSON.parse(r.content.map((c) => c.text).join(''));
  };
  try {
    await open(page);
    const fact = await call('edit_fact', {
      subject: 'France', prompt: PROMPT, target: ' Rome', layer: 6, clamp: 4, kl_weight: 0.0625,
      paraphrases: ["France's capital city is"], neighbors: ['The capital of Germany is'],
      hypothesis: 'the capital of France is kept in layer 6',
    });
    // The proposal and its evaluation: the edit makes " Rome" the answer; the neighbour's row
    // is reported (whether it keeps its answer is the fact editor's score, measured elsewhere).
    expect(fact.status).toBe('pending');
    expect(fact.label).toContain('model.layers.6.mlp.down_proj.weight');
    expect(fact.report.old.token).toBe(' Paris');
    expect(fact.report.scores.efficacy).toBe(100);
    expect(fact.report.probes.map((p) => p.group)).toEqual(['prompt', 'paraphrase', 'neighbor']);
    expect(fact.report.probes[2].old.token).toBe(' Berlin');
    expect(fact.report.generation.edited.startsWith(' Rome')).toBeTruthy();
    let run = await call('run_prompt', { prompt: PROMPT, target: ' Rome' });
    expect(run.edited).toBeNull(); // pending: nothing changed yet
    // A person sees it in the page and accepts it.
    const item = page.locator('.pending li');
    await expect(item).toHaveCount(1, { timeout: 30_000 });
    await expect(item).toContainText('low_rank model.layers.6.mlp.down_proj.weight');
    await openTab(page, 'Patch');
    await item.locator('button.accept').click();
    await expect(page.locator('.pending li')).toHaveCount(0);
    run = await call('run_prompt', { prompt: PROMPT, target: ' Rome' });
    expect(run.base.top[0].token).toBe(' Paris');
    expect(run.edited.top[0].token).toBe(' Rome');
    // One step: undo in the page gives the base model back.
    await page.locator('.history button.undo').click();
    await expect(page.locator('.history button.undo')).toBeDisabled();
    run = await call('run_prompt', { prompt: PROMPT, target: ' Rome' });
    expect(run.edited).toBeNull();
  } finally {
    await client.close();
  }
});

test('an agent writes two facts at once (MEMIT) into a saved patch; loaded as a layer, the edited model says both', async ({ request, baseURL }) => {
  test.setTimeout(400_000);
  const client = await mcpClient(baseURL);
  const call = async (name, args) => {
    const r = await client.callTool({ name, arguments: args }, undefined, { timeout: 350_000 });
    expect(r.isError, r.content.map((c) => c.text).join('')).toBeFalsy();
    return JSON.parse(r.content.map((c) => c.text).join(''));
  };
  const facts = [
    { subject: 'France', prompt: PROMPT, target: ' Rome' },
    { subject: 'Germany', prompt: 'The capital of Germany is', target: ' Madrid' },
  ];
  try {
    const name = `memit-${Date.now()}.json`;
    const out = await call('edit_facts', {
      facts, layers: [4, 5, 6, 7, 8], save_as: name, hypothesis: 'capitals are kept in layers 4-8',
    });
    expect(out.saved).toBe(name);
    expect(out.reports.map((r) => [r.rank, r.layers])).toEqual([[2, [4, 5, 6, 7, 8]], [2, [4, 5, 6, 7, 8]]]);
    expect(out.reports.map((r) => r.scores.efficacy)).toEqual([100, 100]);
    let run = await call('run_prompt', { prompt: PROMPT, target: ' Rome' });
    expect(run.edited).toBeNull(); // saved, not applied
    const loaded = await (await request.post('/api/load_saved', { data: { name } })).json();
    expect(loaded.applied).toBeTruthy();
    // Five low-rank rows of rank 2 in the session, one per layer.
    const session = await (await request.get('/api/session')).json();
    expect(session.low_rank.map((r) => [r.tensor, r.rank]).sort()).toEqual(
      [4, 5, 6, 7, 8].map((l) => [`model.layers.${l}.mlp.down_proj.weight`, 2]));
    for (const f of facts) {
      run = await call('run_prompt', { prompt: f.prompt, target: f.target });
      expect(run.base.top[0].token).not.toBe(f.target);
      expect(run.edited.top[0].token).toBe(f.target);
    }
  } finally {
    await client.close();
    await resetSession(request);
  }
});

test('an agent ablates a direction into a saved patch; loaded as a layer, the edited model does what the report says', async ({ request, baseURL }) => {
  const client = await mcpClient(baseURL);
  const call = async (name, args) => {
    const r = await client.callTool({ name, arguments: args }, undefined, { timeout: 200_000 });
    expect(r.isError, r.content.map((c) => c.text).join('')).toBeFalsy();
    return JSON.parse(r.content.map((c) => c.text).join(''));
  };
  const from = ['The capital of France is', 'The Eiffel Tower is located in the city of',
    'The Louvre museum is in', 'The French government sits in the city of',
    'The largest city in France is', 'The river Seine flows through the city of'];
  const to = ['The capital of Germany is', 'The Colosseum is located in the city of',
    'The Prado museum is in', 'The British government sits in the city of',
    'The largest city in Japan is', 'The river Thames flows through the city of'];
  const held = from.filter((_, i) => i % 2 === 1);
  try {
    const name = `ablation-${Date.now()}.json`;
    const out = await call('ablate', {
      from, to, layer: 10, tokens: [' Paris'], generate: 4, save_as: name,
      hypothesis: 'Paris is one direction of the residual stream',
    });
    expect(out.saved).toBe(name);
    expect(out.report.entries).toBe(60);
    expect(out.report.token_prob.edited).toBeLessThan(out.report.token_prob.base / 10);
    let run = await call('run_prompt', { prompt: held[0], target: ' Paris' });
    expect(run.edited).toBeNull(); // saved, not applied
    const loaded = await (await request.post('/api/load_saved', { data: { name } })).json();
    expect(loaded.applied).toBeTruthy();
    // The session's layer gives the probabilities the report measured.
    let sum = 0;
    for (const prompt of held) {
      run = await call('run_prompt', { prompt, target: ' Paris' });
      expect(run.base.top[0].token).toBe(' Paris');
      sum += run.edited.target.prob;
    }
    expect(sum / held.length).toBeCloseTo(out.report.token_prob.edited, 4);
  } finally {
    await client.close();
    await resetSession(request); // the layer holds 60 edited matrices: later tests read them
  }
});

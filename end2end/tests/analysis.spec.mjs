// Finding what to edit: statistics and histogram, row/column profiles, the model scan.
import { test, expect } from '@playwright/test';
import { paths } from './paths.mjs';
import { cli, resetSession, openView } from './helpers.mjs';

const EMBED = 'model.embed_tokens.weight';
const NORM = 'model.layers.3.post_attention_layernorm.weight';
const q = (params) => '?' + new URLSearchParams(params).toString();

test.beforeEach(async ({ request }) => {
  await resetSession(request);
});

/** The plotting area of a chart canvas (its data-plot attribute). */
async function area(locator) {
  const [left, top, width, height] = (await locator.getAttribute('data-plot')).split(',').map(Number);
  return { left, top, width, height };
}

/** Whether any pixel of the canvas's plotting area is neither white nor transparent. */
async function drawn(locator) {
  const g = await area(locator);
  return locator.evaluate((c, g) => {
    const d = c.getContext('2d').getImageData(g.left, g.top, g.width, g.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 200 || d[i + 1] < 200)) n++;
    return n;
  }, g);
}

test('statistics and histogram of a tensor agree with the CLI; hover reads a bin', async ({ page }) => {
  await openView(page, q({ t: NORM, tab: 'stats' }));
  const want = cli('stats', paths.model, NORM, '--json');
  const panel = page.locator('.stats-panel');
  await expect(panel.locator('.stats-body')).toHaveAttribute('data-tensor', NORM);
  // The planted NaN and infinities are counted; the numbers are over the finite values.
  await expect(panel.locator('tr[data-stat="NaN"] td').nth(1)).toHaveText('1');
  await expect(panel.locator('tr[data-stat="+Inf"] td').nth(1)).toHaveText('1');
  const mean = Number(await panel.locator('tr[data-stat="mean"] td').nth(1).textContent());
  expect(mean).toBe(want.summary.mean);
  const p50 = Number(await panel.locator('tr[data-stat="p50"] td').nth(1).textContent());
  expect(p50).toBe(want.summary.quantiles.find((x) => x.q === 0.5).value);
  await expect(panel.locator('.histogram-specials')).toContainText('NaN 1 · +Inf 1 · -Inf 1');

  const canvas = panel.locator('canvas.histogram');
  await expect(canvas).toHaveAttribute('data-bins', '256');
  await expect.poll(() => drawn(canvas)).toBeGreaterThan(50);
  // Fewer bins: hover the middle of the plot and read the bin and its count.
  await panel.locator('input.bins').fill('8');
  await panel.locator('input.bins').press('Enter');
  await expect(canvas).toHaveAttribute('data-bins', '8');
  const h = cli('stats', paths.model, NORM, '--json', '--bins', '8').histogram;
  const g = await area(canvas);
  await canvas.hover({ position: { x: g.left + g.width * (3.5 / 8), y: g.top + g.height / 2 } });
  await expect(panel.locator('.histogram-hover')).toContainText(`bin 3: `);
  await expect(panel.locator('.histogram-hover')).toContainText(`: ${h.counts[3]}`);
  // Log counts redraw the same bins.
  const linear = await drawn(canvas);
  await panel.locator('input.log-counts').check();
  await expect.poll(() => drawn(canvas)).not.toBe(linear);
});

test('an edit changes the statistics', async ({ page }) => {
  await openView(page, q({ t: NORM }));
  const panel = page.locator('.stats-panel');
  await expect(panel.locator('tr[data-stat="NaN"] td').nth(1)).toHaveText('1');
  // Replace the NaN at index 5 through the edit API; the panel refetches for the new version.
  const r = await page.request.post('/api/edit', { data: { request: { tensor: NORM, spec: '5', op: { op: 'set', value: '1.0' } } } });
  expect(r.ok()).toBeTruthy();
  await page.reload();
  await expect(panel.locator('tr[data-stat="NaN"] td').nth(1)).toHaveText('0');
  await expect(panel.locator('tr[data-stat="finite"] td').nth(1)).toHaveText('126');
});

test('clicking the peak of the row profile shows that row in the heatmap', async ({ page }) => {
  await openView(page, q({ t: EMBED, tab: 'stats' }));
  await expect(page.locator('.view-status')).toContainText('pooled');
  const rows = page.locator('canvas.profile.rows');
  await expect(rows).toHaveAttribute('data-n', '2048');
  const peak = Number(await rows.getAttribute('data-peak'));
  // The demo embedding has two planted rows scaled 8x: the L2 profile peaks at one of them.
  expect([7, 300]).toContain(peak);
  const g = await area(rows);
  await rows.click({ position: { x: g.left + ((peak + 0.5) * g.width) / 2048, y: g.top + g.height / 2 } });
  // The heatmap now shows that row exactly, and the inspector holds a cell of it.
  await expect(page.locator('.view-status')).toContainText('exact');
  await expect(page.locator('.inspector .cell-index')).toHaveText(`[${peak}, 0]`);
  const ys = new URL(page.url()).searchParams.get('ys').split(':').map(Number);
  expect(ys[0] <= peak && peak < ys[1]).toBeTruthy();
  // The column profile switches quantity and keeps one point per column.
  await page.locator('select.profile-quantity').selectOption('maxabs');
  await expect(page.locator('canvas.profile.cols')).toHaveAttribute('data-n', '128');
});

test('the scan flags the planted problems, sorts, and opens a tensor', async ({ page }) => {
  await openView(page, q({ t: EMBED }));
  await page.getByText('scan model').click();
  await expect(page.locator('.scan-progress')).toHaveAttribute('data-complete', 'true', { timeout: 30000 });
  const table = page.locator('.scan-table');
  await expect(table.locator('tbody tr')).toHaveCount(54);
  // Default order: most flags first, the NaN/Inf tensor on top.
  await expect(table.locator('tbody tr').first()).toHaveAttribute('data-tensor', NORM);
  const outlier = 'model.layers.2.self_attn.o_proj.weight';
  await expect(table.locator(`tr[data-tensor="${outlier}"] td.flags`)).toContainText('outlier');
  await expect(page.locator('canvas.siblings')).toHaveAttribute('data-outliers', outlier);
  // Sort by std both ways: the column reads in order, and agrees with the CLI's extremes.
  const stds = async () => (await table.locator('tbody tr td:nth-child(7)').allTextContents()).filter((t) => t !== '').map(Number);
  const scan = cli('scan', paths.model, '--json');
  const all = scan.rows.map((r) => r.summary.std).filter((s) => s !== null);
  await table.locator('th[data-sort="std"]').click();
  // The table shows 4 significant digits.
  const near = (a, b) => Math.abs(a - b) <= 1e-3 * Math.abs(b);
  const top = Math.max(...all);
  await expect.poll(async () => near((await stds())[0], top)).toBe(true);
  let got = await stds();
  expect(got).toEqual([...got].sort((a, b) => b - a));
  await table.locator('th[data-sort="std"]').click();
  const bottom = Math.min(...all);
  await expect.poll(async () => near((await stds())[0], bottom)).toBe(true);
  got = await stds();
  expect(got).toEqual([...got].sort((a, b) => a - b));
  // Filter, then open a tensor from the table.
  await page.locator('.scan-filter').fill('o_proj');
  await expect(table.locator('tbody tr')).toHaveCount(4);
  await table.locator(`tr[data-tensor="${outlier}"]`).click();
  await expect(page).toHaveURL(new RegExp(`t=${outlier.replaceAll('.', '\\.')}`));
  await expect(page.locator('.tensor-name')).toHaveText(outlier);
  await expect(page.locator('.scan-panel')).toHaveCount(0);
});

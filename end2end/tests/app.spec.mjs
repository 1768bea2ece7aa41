// One test per user story of the web app, against the real server and the demo model.
import { test, expect } from '@playwright/test';
import { readFileSync, existsSync } from 'node:fs';
import { paths } from './paths.mjs';
import { cli, resetSession, openView, cellCenter, pixel, clickCell, waitPixelChange, openTab } from './helpers.mjs';

const EMBED = 'model.embed_tokens.weight';
const NORM = 'model.layers.3.post_attention_layernorm.weight';
const q = (params) => '?' + new URLSearchParams(params).toString();

test.beforeEach(async ({ request }) => {
  await resetSession(request);
});

test('filter the tensor list and open a tensor', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await page.getByLabel('filter tensors').fill('up_proj');
  const links = page.locator('.tensor-list a[data-tensor]');
  await expect(links).toHaveCount(8); // 4 layers x (weight, weight_scale)
  for (const name of await links.evaluateAll((as) => as.map((a) => a.dataset.tensor))) {
    expect(name).toContain('up_proj');
  }
  await page.getByLabel('regex').check();
  await page.getByLabel('filter tensors').fill('layers\\.[01]\\.mlp\\.up_proj\\.weight$');
  await expect(links).toHaveCount(2);
  await links.first().click();
  await expect(page).toHaveURL(/t=model\.layers\.0\.mlp\.up_proj\.weight/);
  await expect(page.locator('.tensor-name')).toHaveText('model.layers.0.mlp.up_proj.weight');
  await expect(page.locator('.view-status')).toContainText('exact: 256 x 128 cells');
});

test('the canvas shows NaN and Inf cells in their marked colours', async ({ page }) => {
  await openView(page, q({ t: NORM }));
  // 1-D tensor of 128: one row; NaN at 5, +Inf at 17, -Inf at 42 (planted in the demo).
  for (const [col, rgba] of [[5, [255, 0, 255, 255]], [17, [0, 255, 0, 255]], [42, [0, 255, 255, 255]]]) {
    const p = await cellCenter(page, 1, 128, 0, col);
    expect(await pixel(page, p.x, p.y)).toEqual(rgba);
  }
  await expect(page.locator('.specials')).toContainText('3 NaN/Inf cells');
});

test('hover shows the exact value and bytes of a cell', async ({ page }) => {
  await openView(page, q({ t: EMBED, ys: '0:4', xs: '0:4' }));
  const want = cli('slice', paths.model, EMBED, '1,2', '--json');
  const p = await cellCenter(page, 4, 4, 1, 2);
  await page.locator('canvas.overlay').hover({ position: p });
  const text = page.locator('.heatmap .hover');
  await expect(text).toContainText('[1, 2] = ');
  await expect(text).toContainText(`0x${want.hex[0]}`);
  const shown = Number((await text.textContent()).split(' = ')[1].split(' ')[0]);
  expect(Math.fround(shown)).toBe(want.values[0]);
});

test('select, edit, see value and colour change; undo restores', async ({ page }) => {
  await openView(page, q({ t: EMBED, ys: '0:8', xs: '0:8' }));
  const p = await cellCenter(page, 8, 8, 2, 3);
  const before = await pixel(page, p.x, p.y);
  const original = cli('slice', paths.model, EMBED, '2,3', '--json').hex[0];
  await clickCell(page, 8, 8, 2, 3);
  await expect(page.locator('.cell-index')).toHaveText('[2, 3]');
  await expect(page.locator('.cell-hex code')).toHaveText(original);
  await page.getByLabel('edit value').fill('5');
  await page.getByRole('button', { name: 'apply' }).click();
  await expect(page.locator('.cell-value')).toHaveText('5');
  await waitPixelChange(page, p, before);
  const after = await pixel(page, p.x, p.y);
  expect(after[0]).toBeGreaterThan(after[2]); // the new maximum is the red end of the scale
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(1);
  await expect(page.locator('.patch-panel .entries .new-value')).toHaveText('5');

  await page.getByRole('button', { name: 'undo' }).click();
  await expect(page.locator('.cell-hex code')).toHaveText(original);
  await expect.poll(async () => JSON.stringify(await pixel(page, p.x, p.y))).toBe(JSON.stringify(before));
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(0);
});

test('a value the dtype cannot hold is shown inline and changes nothing', async ({ page }) => {
  await openView(page, q({ t: 'model.layers.0.mlp.up_proj.weight', ys: '0:4', xs: '0:4' }));
  await clickCell(page, 4, 4, 0, 0);
  await page.getByLabel('edit value').fill('300');
  await page.getByRole('button', { name: 'apply' }).click();
  await expect(page.locator('.edit-error')).toContainText('300 is out of range for I8');
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(0);
});

test('edit raw bytes with hex, and flip a bit', async ({ page }) => {
  await openView(page, q({ t: EMBED, ys: '0:4', xs: '0:4' }));
  await clickCell(page, 4, 4, 0, 1);
  await page.getByLabel('operation').selectOption('hex');
  await page.getByLabel('edit value').fill('0000803f');
  await page.getByRole('button', { name: 'apply' }).click();
  await expect(page.locator('.cell-value')).toHaveText('1');
  await page.locator('.bit.sign').click();
  await expect(page.locator('.cell-value')).toHaveText('-1');
  await expect(page.locator('.cell-hex code')).toHaveText('000080bf');
});

test('save a patch and check the downloaded entry', async ({ page }) => {
  await openView(page, q({ t: EMBED, ys: '0:4', xs: '0:4' }));
  await clickCell(page, 4, 4, 3, 3);
  await page.getByLabel('edit value').fill('0.25');
  await page.getByRole('button', { name: 'apply' }).click();
  await openTab(page, 'Patch');
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(1);
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'download' }).click()]);
  const doc = JSON.parse(readFileSync(await download.path(), 'utf8'));
  expect(doc.format).toBe('tensor-surgeon-patch');
  expect(doc.entries).toEqual([expect.objectContaining({ tensor: EMBED, offset: (3 * 128 + 3) * 4, patched: '0000803e' })]);
  await page.getByRole('button', { name: 'save to patches folder' }).click();
  const saved = page.locator('.saved code');
  await expect(saved).toContainText('session.patch.json');
  expect(existsSync(await saved.textContent())).toBeTruthy();
});

test('bake, then read the baked value with the CLI', async ({ page }) => {
  await openView(page, q({ t: EMBED, ys: '0:4', xs: '0:4' }));
  await clickCell(page, 4, 4, 1, 1);
  await page.getByLabel('edit value').fill('-2.5');
  await page.getByRole('button', { name: 'apply' }).click();
  await openTab(page, 'Patch');
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(1);
  await page.getByLabel('bake file name').fill('e2e-baked');
  await page.getByRole('button', { name: 'bake' }).click();
  const written = page.locator('.baked code');
  await expect(written).toContainText('e2e-baked.safetensors');
  const baked = cli('slice', await written.textContent(), EMBED, '1,1', '--json');
  expect(baked.values).toEqual([-2.5]);
  expect(cli('slice', paths.model, EMBED, '1,1', '--json').values).not.toEqual([-2.5]);
});

test('the view state lives in the URL: reload and back restore it', async ({ page }) => {
  await openView(page, q({ t: 'model.rotary_emb.cos_sin' }));
  await expect(page.getByLabel('y dim')).toHaveValue('2');
  await expect(page.getByLabel('x dim')).toHaveValue('3');
  await page.getByLabel('dim 1 index', { exact: true }).fill('3');
  await page.getByLabel('dim 1 index', { exact: true }).press('Enter');
  await expect(page).toHaveURL(/i=1%2C3%2C|i=1,3,/);
  await page.getByLabel('x stop').fill('8');
  await page.getByLabel('x stop').press('Enter');
  await expect(page.locator('.view-status')).toContainText('exact: 16 x 8 cells');
  const url = page.url();
  await page.reload();
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await expect(page.getByLabel('dim 1 index', { exact: true })).toHaveValue('3');
  await expect(page.locator('.view-status')).toContainText('exact: 16 x 8 cells');
  expect(page.url()).toBe(url);
  await page.goBack();
  await expect(page.locator('.view-status')).toContainText('exact: 16 x 16 cells');
});

test('large views are pooled; wheel zooms down to exact cells', async ({ page }) => {
  await openView(page, q({ t: EMBED }));
  await expect(page.locator('.view-status')).toContainText('pooled: 2048 x 128 cells shown as');
  await expect(page.locator('.view-status')).toContainText('max|x|');
  const box = await page.locator('canvas.overlay').boundingBox();
  const g = (await page.locator('canvas.cells').getAttribute('data-plot')).split(',').map(Number);
  const at = { x: box.x + g[0] + g[2] / 2, y: box.y + g[1] + g[3] / 4 };
  await page.mouse.move(at.x, at.y);
  await page.mouse.wheel(0, -100);
  await expect(page.locator('.view-status')).toContainText('pooled: 1024 x 64 cells');
  await page.mouse.wheel(0, -100);
  await expect(page.locator('.view-status')).toContainText('exact: 512 x 32 cells');
  await expect(page).toHaveURL(/ys=/);
});

test('shift-drag selects a rectangle; arrow keys move a single selection', async ({ page }) => {
  await openView(page, q({ t: EMBED, ys: '0:8', xs: '0:8' }));
  const a = await cellCenter(page, 8, 8, 1, 1);
  const b = await cellCenter(page, 8, 8, 3, 4);
  const box = await page.locator('canvas.overlay').boundingBox();
  await page.keyboard.down('Shift');
  await page.mouse.move(box.x + a.x, box.y + a.y);
  await page.mouse.down();
  await page.mouse.move(box.x + b.x, box.y + b.y, { steps: 4 });
  await page.mouse.up();
  await page.keyboard.up('Shift');
  await expect(page.locator('.edit-panel .target')).toHaveText(`${EMBED}[1:4:1,1:5:1]`);
  await page.getByLabel('operation').selectOption('zero');
  await page.getByRole('button', { name: 'apply' }).click();
  await expect(page.locator('.patch-panel')).toContainText('12 changed element(s)');

  await clickCell(page, 8, 8, 5, 5);
  await page.locator('canvas.overlay').press('ArrowRight');
  await page.locator('canvas.overlay').press('ArrowDown');
  await expect(page.locator('.cell-index')).toHaveText('[6, 6]');
  await page.locator('canvas.overlay').press('Enter');
  await expect(page.getByRole('button', { name: 'apply' })).toBeFocused(); // "zero" takes no value
  await page.getByLabel('operation').selectOption('set');
  await page.locator('canvas.overlay').press('Enter');
  await expect(page.getByLabel('edit value')).toBeFocused();
});

test('load a patch file: applied when clean, conflicts listed when not', async ({ page }) => {
  const original = cli('slice', paths.model, EMBED, '0,0', '--json').hex[0];
  const patch = {
    format: 'tensor-surgeon-patch', version: 1, created: '2026-01-01T00:00:00Z', note: '', base: [],
    entries: [{ tensor: EMBED, offset: 0, original, patched: '00004040' }],
  };
  await openView(page, q({ t: EMBED, ys: '0:4', xs: '0:4' }));
  await page.getByLabel('load patch').setInputFiles({ name: 'p.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(patch)) });
  await expect(page.locator('.patch-panel .entries .new-value')).toHaveText('3');
  const bad = { ...patch, entries: [{ ...patch.entries[0], offset: 4 }] };
  await page.getByLabel('load patch').setInputFiles({ name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(bad)) });
  await expect(page.locator('.conflicts')).toContainText('1 conflict(s)');
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(1);
});

test('metadata is untrusted: shown as text, never as markup', async ({ page }) => {
  await page.goto('/');
  await page.locator('details.summary > summary').click();
  const cellText = page.locator('.metadata td', { hasText: 'untrusted' });
  await expect(cellText).toHaveText('<b>untrusted</b> metadata is shown as text');
  await expect(page.locator('.metadata b')).toHaveCount(0);
});

// Surgery at scale in the browser: patches as layers turned on and off, the delta view, and
// region operations (swapping two rows).
import { test, expect } from '@playwright/test';
import { paths } from './paths.mjs';
import { cli, resetSession, openView, cellCenter, pixel, clickCell, waitPixelChange } from './helpers.mjs';

const EMBED = 'model.embed_tokens.weight';
const q = (params) => '?' + new URLSearchParams(params).toString();
const same = async (page, p, want) =>
  expect.poll(async () => JSON.stringify(await pixel(page, p.x, p.y))).toBe(JSON.stringify(want));

test.beforeEach(async ({ request }) => resetSession(request));

/** A patch setting one F32 element of the embedding (row-major, 128 columns). */
function patchSetting(row, col, hex) {
  const original = cli('slice', paths.model, EMBED, `${row},${col}`, '--json').hex[0];
  return {
    format: 'tensor-surgeon-patch', version: 1, created: '2026-01-01T00:00:00Z', note: '', base: [],
    entries: [{ tensor: EMBED, offset: (row * 128 + col) * 4, original, patched: hex }],
  };
}

async function upload(page, name, patch) {
  await page.getByLabel('load patch').setInputFiles({ name, mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(patch)) });
}

test('two patches loaded at once; turning one off brings its cells back', async ({ page, request }) => {
  const cell = async (r, c) => (await (await request.get(`/api/cell?${new URLSearchParams({ tensor: EMBED, index: `${r},${c}` })}`)).json()).hex;
  const original = await cell(0, 0);
  await openView(page, q({ t: EMBED, ys: '0:4', xs: '0:4', tab: 'patch' }));
  const a = await cellCenter(page, 4, 4, 0, 0);
  const b = await cellCenter(page, 4, 4, 1, 1);
  const [a0, b0] = [await pixel(page, a.x, a.y), await pixel(page, b.x, b.y)];
  await upload(page, 'first.json', patchSetting(0, 0, '00004040')); // 3.0
  await expect(page.locator('.layers li[data-layer="first.json"]')).toBeVisible();
  await upload(page, 'second.json', patchSetting(1, 1, '000040c0')); // -3.0
  await expect(page.locator('.layers li')).toHaveCount(2);
  await waitPixelChange(page, a, a0);
  await waitPixelChange(page, b, b0);
  const [a1, b1] = [await pixel(page, a.x, a.y), await pixel(page, b.x, b.y)];
  expect(await cell(0, 0)).toBe('00004040');

  await page.getByLabel('patch first.json on').uncheck();
  await expect(page.locator('.layers li[data-layer="first.json"]')).toHaveClass(/off/);
  // Back to the base value (the colour scale is still ±3: the other patch holds -3).
  await waitPixelChange(page, a, a1);
  expect(await cell(0, 0)).toBe(original);
  await same(page, b, b1); // the other patch stays
  expect(await cell(1, 1)).toBe('000040c0');
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(1);

  await page.getByLabel('patch first.json on').check();
  await same(page, a, a1);
  expect(await cell(0, 0)).toBe('00004040');
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(2);
});

test('the delta view shows only the edited cells, on a scale centred at zero', async ({ page }) => {
  await openView(page, q({ t: EMBED, ys: '0:8', xs: '0:8' }));
  await upload(page, 'two.json', {
    ...patchSetting(2, 3, '00004040'),
    entries: [...patchSetting(2, 3, '00004040').entries, ...patchSetting(5, 6, '0000a0c0').entries], // 3, -5
  });
  await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(2);
  await page.getByRole('group', { name: 'show' }).getByRole('button', { name: 'delta' }).click();
  await expect(page).toHaveURL(/show=delta/);
  await expect(page.locator('.view-status')).toHaveAttribute('data-changed', '2');
  await expect(page.locator('.view-status')).toContainText('delta: exact: 8 x 8 cells, 2 cells changed');
  // Unchanged cells are the centre of the diverging scale (white); the two edits are coloured,
  // the larger |delta| (-5 - x) at full blue.
  const centre = async (r, c) => { const p = await cellCenter(page, 8, 8, r, c); return pixel(page, p.x, p.y); };
  const white = await centre(0, 0);
  expect(white[0]).toBeGreaterThan(220);
  expect(Math.abs(white[0] - white[2])).toBeLessThan(16); // neutral: neither red nor blue
  for (const [r, c] of [[0, 7], [7, 0], [3, 3], [2, 2]]) expect(await centre(r, c)).toEqual(white);
  const up = await cellCenter(page, 8, 8, 2, 3);
  const down = await cellCenter(page, 8, 8, 5, 6);
  const [pu, pd] = [await pixel(page, up.x, up.y), await pixel(page, down.x, down.y)];
  expect(pu[0]).toBeGreaterThan(pu[2]); // positive delta: red
  expect(pd[2]).toBeGreaterThan(pd[0]); // negative delta: blue
  // Hover tells the delta and both values.
  await page.locator('canvas.overlay').hover({ position: down });
  await expect(page.locator('.heatmap .hover')).toContainText('[5, 6]: delta =');
  await expect(page.locator('.heatmap .hover')).toContainText('after -5');
  // Before shows the base: the edited cell has its old colour again.
  await page.getByRole('group', { name: 'show' }).getByRole('button', { name: 'before' }).click();
  await expect(page.locator('.view-status')).toContainText('before: exact');
});

test('swap two rows of the embedding and see them swapped', async ({ page, request }) => {
  await openView(page, q({ t: EMBED, ys: '0:4', xs: '0:6', tab: 'region' }));
  const row = async (r) => {
    const out = [];
    for (let c = 0; c < 6; c++) {
      const p = await cellCenter(page, 4, 6, r, c);
      out.push(JSON.stringify(await pixel(page, p.x, p.y)));
    }
    return out;
  };
  const [r1, r2] = [await row(1), await row(2)];
  expect(r1).not.toEqual(r2);
  const v1 = cli('slice', paths.model, EMBED, '1,0:6', '--json').hex;
  const v2 = cli('slice', paths.model, EMBED, '2,0:6', '--json').hex;
  await clickCell(page, 4, 6, 1, 0);
  await page.getByLabel('region op', { exact: true }).selectOption('swap_rows');
  await page.getByLabel('region argument').fill('2');
  await page.getByRole('button', { name: 'run' }).click();
  await expect.poll(async () => JSON.stringify(await row(1))).toBe(JSON.stringify(r2));
  expect(await row(2)).toEqual(r1);
  // The server agrees, byte for byte.
  const cell = async (r, c) => (await (await request.get(`/api/cell?${new URLSearchParams({ tensor: EMBED, index: `${r},${c}` })}`)).json()).hex;
  for (let c = 0; c < 6; c++) {
    expect(await cell(1, c)).toBe(v2[c]);
    expect(await cell(2, c)).toBe(v1[c]);
  }
  await expect(page.locator('.region-error')).toHaveCount(0);
  // Out of range: an inline error, nothing changes.
  await page.getByLabel('region argument').fill('5000');
  await page.getByRole('button', { name: 'run' }).click();
  await expect(page.locator('.region-error')).toContainText('row 5000 is out of range');
});

// Seeing structure: PCA scatter of the demo embedding, token search, nearest tokens.
import { test, expect } from '@playwright/test';
import { paths } from './paths.mjs';
import { cli, resetSession, openView } from './helpers.mjs';

const EMBED = 'model.embed_tokens.weight';
const q = (params) => '?' + new URLSearchParams(params).toString();

test.beforeEach(async ({ request }) => {
  await resetSession(request);
});

/** Numbers of a comma-separated data attribute. */
async function numbers(locator, attr) {
  return (await locator.getAttribute(attr)).split(',').map(Number);
}

/** A PNG of a canvas, to tell whether it changed. */
const snapshot = (locator) => locator.evaluate((c) => c.toDataURL());

test('the scatter of the embedding: hover names a point and its token, click opens its row', async ({ page }) => {
  await openView(page, q({ t: EMBED, tab: 'project' }));
  await page.locator('.project-run').click();
  const canvas = page.locator('canvas.scatter');
  await expect(canvas).toHaveAttribute('data-n', '2048');
  await expect(page.locator('.project-summary')).toContainText('PC1: variance');
  // Row 7 is a planted outlier row (8x norm): far from the others, so easy to point at.
  const want = cli('project', paths.model, EMBED, '--dims', '2', '--json');
  const [x, y] = want.points[7];
  const [x0, x1, y0, y1] = await numbers(canvas, 'data-map');
  const [left, top, width, height] = await numbers(canvas, 'data-plot');
  const at = { x: left + ((x - x0) / (x1 - x0)) * width, y: top + ((y1 - y) / (y1 - y0)) * height };
  await canvas.hover({ position: at });
  const hover = page.locator('.scatter-hover');
  await expect(hover).toContainText('row 7 ');
  await expect(hover).toContainText(JSON.stringify(want.labels[7]));
  // The web's explained variance is the CLI's.
  await expect(page.locator('.project-summary')).toContainText(`(${(want.explained_variance_ratio[0] * 100).toFixed(2)}%)`);
  await canvas.click({ position: at });
  await expect(page).toHaveURL(/ys=7%3A8|ys=7:8/);
  // The clicked point's nearest tokens, as the CLI lists them.
  const near = cli('tokens', paths.model, '--nearest', '#7', '--k', '8', '--json');
  await expect(page.locator('.scatter-nearest')).toContainText(`nearest to row 7 ${JSON.stringify(want.labels[7])}`);
  await expect(page.locator('.scatter-nearest li')).toHaveCount(8);
  await expect(page.locator('.scatter-nearest li').first()).toContainText(String(near.neighbors[0].row));
  await expect(page.locator('.view-status')).toContainText('exact: 1 x 128 cells');
});

test('a 3-D scatter rotates when dragged', async ({ page }) => {
  await openView(page, q({ t: EMBED, tab: 'project' }));
  await page.locator('.project-dims').selectOption('3');
  await page.locator('.project-color').selectOption('cluster');
  await page.locator('.project-run').click();
  const canvas = page.locator('canvas.scatter');
  await expect(canvas).toHaveAttribute('data-dims', '3');
  const before = await snapshot(canvas);
  const draws = Number(await canvas.getAttribute('data-draws'));
  const [left, top, width, height] = await numbers(canvas, 'data-plot');
  await page.mouse.move(0, 0);
  const box = await canvas.boundingBox();
  const cx = box.x + left + width / 2;
  const cy = box.y + top + height / 2;
  await expect(canvas).toHaveAttribute('data-camera', '0.60,0.35');
  const drag = async (dx, dy) => {
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    await page.mouse.move(cx + dx, cy + dy, { steps: 5 });
    await page.mouse.up();
    await page.mouse.move(0, 0); // off the canvas: no hovered point drawn
  };
  // 0.01 radian per pixel: right turns the yaw, down the pitch.
  await drag(80, 30);
  await expect(canvas).toHaveAttribute('data-camera', '1.40,0.65');
  await expect.poll(async () => Number(await canvas.getAttribute('data-draws'))).toBeGreaterThan(draws);
  const turned = await snapshot(canvas);
  expect(turned).not.toBe(before);
  // Dragging back is the inverse rotation: the very same picture as before.
  await drag(-80, -30);
  await expect(canvas).toHaveAttribute('data-camera', '0.60,0.35');
  await expect.poll(() => snapshot(canvas)).toBe(before);
});

test('find a token, open its row, and list its nearest tokens as the CLI does', async ({ page }) => {
  await openView(page, q({ t: 'lm_head.weight', tab: 'tokens' }));
  await page.getByLabel('find a token').fill(' Paris');
  await page.getByLabel('find a token').press('Enter');
  const hit = page.locator('.token-hits a').first();
  await expect(hit).toHaveAttribute('data-id', '1000');
  await hit.click();
  // The embedding opens at that row, selected; the inspector names the token.
  await expect(page.locator('.tensor-name')).toHaveText(EMBED);
  await expect(page.locator('.inspector .cell-index')).toHaveText('[1000, 0]');
  await expect(page.locator('.inspector .cell-token')).toHaveText('" Paris"');
  const want = cli('tokens', paths.model, '--nearest', ' Paris', '--k', '10', '--json');
  const rows = page.locator('.nearest tr[data-row]');
  await expect(rows).toHaveCount(10);
  expect(await rows.evaluateAll((trs) => trs.map((t) => Number(t.dataset.row)))).toEqual(want.neighbors.map((n) => n.row));
  // Compare with the first neighbour: cosine as the CLI says.
  await rows.first().locator('button.compare').click();
  const cmp = cli('tokens', paths.model, '--compare', ' Paris', `#${want.neighbors[0].row}`, '--json');
  const shown = Number(await page.locator('.comparison').getAttribute('data-cosine'));
  expect(Math.abs(shown - cmp.cosine)).toBeLessThan(1e-9);
  await expect(page.locator('canvas.delta-strip')).toBeVisible();
});

/** Screen position (page pixels) of a 2-D layout point on the scatter canvas. */
async function screenOf(canvas, point) {
  const [x0, x1, y0, y1] = await numbers(canvas, 'data-map');
  const [left, top, width, height] = await numbers(canvas, 'data-plot');
  const box = await canvas.boundingBox();
  return {
    x: box.x + left + ((point[0] - x0) / (x1 - x0)) * width,
    y: box.y + top + ((y1 - point[1]) / (y1 - y0)) * height,
  };
}

test('t-SNE runs live and stops; a lassoed planted group, zeroed in the region panel, is exactly those rows in the patch', async ({ page, request }) => {
  test.setTimeout(180_000);
  await openView(page, q({ t: EMBED, tab: 'project' }));
  await page.locator('.project-method').selectOption('tsne');
  const canvas = page.locator('canvas.scatter');
  const status = page.locator('.project-status');
  const frames = async () => Number(await canvas.getAttribute('data-frames'));

  // A run with another seed, stopped partway: it keeps the layout it had.
  await page.locator('.project-seed').fill('1');
  await page.locator('.project-seed').dispatchEvent('change');
  await page.locator('.project-run').click();
  await expect(status).toHaveAttribute('data-running', 'true');
  await expect.poll(frames, { timeout: 60_000 }).toBeGreaterThan(2);
  const seen = await frames();
  await expect.poll(frames, { timeout: 60_000 }).toBeGreaterThan(seen);
  await page.locator('.project-stop').click();
  await expect(status).toHaveAttribute('data-running', 'false');
  await expect(status).toContainText('stopped');
  const steps = Number((await status.textContent()).match(/step (\d+) of 750/)[1]);
  expect(steps).toBeLessThan(750);
  await expect(canvas).toHaveAttribute('data-n', '2048');
  await expect(canvas).toHaveAttribute('data-method', 't-SNE');

  // The default seed, run to the end: the frame counter grows while it runs.
  await page.locator('.project-seed').fill('');
  await page.locator('.project-seed').dispatchEvent('change');
  await page.locator('.project-run').click();
  await expect.poll(frames, { timeout: 60_000 }).toBeGreaterThan(1);
  await expect(status).toHaveAttribute('data-running', 'false', { timeout: 120_000 });
  await expect(status).toContainText('step 750 of 750');
  expect(await frames()).toBeGreaterThan(2);

  // The same layout from the CLI (same seed, deterministic): where the "numbers" group landed.
  const layout = cli('project', paths.model, EMBED, '--method', 'tsne', '--json');
  const group = [...Array(12).keys()].map((i) => 1024 + i);
  expect(group.map((r) => layout.labels[r])).toContain(' one');
  const at = await Promise.all(group.map((r) => screenOf(canvas, layout.points[r])));
  const pad = 6;
  const xs = at.map((p) => p.x);
  const ys = at.map((p) => p.y);
  const [l, r, t, b] = [Math.min(...xs) - pad, Math.max(...xs) + pad, Math.min(...ys) - pad, Math.max(...ys) + pad];
  // The lasso: around the group, as a hand would draw it.
  await page.mouse.move(l, t);
  await page.keyboard.down('Shift');
  await page.mouse.down();
  for (const [x, y] of [[r, t], [r, b], [l, b], [l, t + 1]]) {
    await page.mouse.move(x, y, { steps: 6 });
  }
  await page.mouse.up();
  await page.keyboard.up('Shift');
  await expect(page.locator('.selection-count')).toHaveText('12 points selected');
  await expect(page.locator('.scatter-selection li').first()).toContainText('row 1024 " one"');

  await page.locator('.to-region').click();
  await expect(page).toHaveURL(/tab=region/);
  await expect(page.locator('.row-set-title')).toHaveText(`12 rows of ${EMBED} from the projection`);
  await expect(page.locator('.row-set-lines')).toContainText('" one"');
  await page.locator('.row-set-apply').click();
  await expect(page.locator('header .undo')).toBeEnabled();

  const patch = await (await request.get('/api/patch/download')).json();
  const rowBytes = 128 * 4;
  const touched = new Set();
  for (const e of patch.entries) {
    expect(e.tensor).toBe(EMBED);
    for (let k = 0; k < e.patched.length / 2; k += 4) touched.add(Math.floor((e.offset + k) / rowBytes));
  }
  expect([...touched].sort((a, b) => a - b)).toEqual(group);
  expect(patch.entries.every((e) => /^0+$/.test(e.patched))).toBe(true);
});

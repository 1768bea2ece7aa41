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

// A GGUF file in the browser: ggml types in the tensor list, a quantized tensor's heatmap of
// decoded values, the hovered cell's block, a cell's block (its code and bytes), the blocks view of scales, an edit of
// a quantized value written into its block, and the model run from the file alone.
import { test, expect } from '@playwright/test';
import { ggufPort } from '../playwright.config.mjs';
import { openView, clickCell, cellCenter, openTab } from './helpers.mjs';

test.use({ baseURL: `http://127.0.0.1:${ggufPort}` });

const W = 'blk.0.ffn_down.weight';

test('a quantized tensor shows its values, and a cell its block', async ({ page, request }) => {
  await openView(page, `?t=${W}&ys=0:4&xs=0:8`);
  await expect(page.locator('.tensor-list')).toContainText('Q4_1');
  const cell = await (await request.get(`/api/cell?tensor=${W}&index=2,5`)).json();
  // Hovering a cell shows its block under the value.
  await page.locator('canvas.overlay').hover({ position: await cellCenter(page, 4, 8, 2, 5) });
  await expect(page.locator('.hover-block')).toContainText(`Q4_1 block 96, element 5 = ${cell.block.scale} × ${cell.block.quant}`);
  await expect(page.locator('.hover-block-hex')).toHaveText(cell.block.hex);
  await clickCell(page, 4, 8, 2, 5);
  await expect(page.locator('.cell-value')).toHaveText(cell.value);
  // Row 2 of 1536 columns holds 48 blocks of 32: element 5 is in block 96.
  await expect(page.locator('.cell-block')).toContainText('Q4_1 block 96, element 5');
  await expect(page.locator('.cell-code')).toContainText(`× ${cell.block.quant}`);
  await expect(page.locator('.block-hex code')).toHaveText(cell.block.hex);
  // A value edit of a quantized tensor writes its block: the panel says what the block holds
  // and what moved, and the cell shows the new value and bytes.
  const q = cell.block.quant < 15 ? cell.block.quant + 1 : cell.block.quant - 1;
  const wanted = Number(cell.block.scale) * q - Number(cell.block.min);
  await page.getByPlaceholder('value (1.5, -inf, nan)').fill(String(wanted));
  await page.getByRole('button', { name: 'apply', exact: true }).click();
  await expect(page.locator('.edit-outcome')).toContainText('Q4_1: 1 block(s) written, scales kept');
  await expect(page.locator('.edit-outcome')).toContainText('no other value moved');
  const after = await (await request.get(`/api/cell?tensor=${W}&index=2,5`)).json();
  expect(after.block.quant).toBe(q);
  await expect(page.locator('.cell-value')).toHaveText(after.value);
  await expect(page.locator('.block-hex code')).toHaveText(after.block.hex);
  await page.getByRole('button', { name: 'undo' }).click();
  await expect(page.locator('.block-hex code')).toHaveText(cell.block.hex);
});

test('the blocks view draws the scale of every block', async ({ page, request }) => {
  await openView(page, `?t=${encodeURIComponent(W + '#scales')}&ys=0:4&xs=0:8`);
  await expect(page.locator('.view-status')).toContainText('exact');
  await clickCell(page, 4, 8, 1, 3);
  const scales = await (await request.get(`/api/cell?tensor=${encodeURIComponent(W + '#scales')}&index=1,3`)).json();
  const block = await (await request.get(`/api/cell?tensor=${W}&index=1,${3 * 32}`)).json();
  expect(Number(scales.value)).toBe(block.block.scale);
  await expect(page.locator('.cell-value')).toHaveText(scales.value);
});

test('the model runs from the GGUF alone', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await openTab(page, 'Run');
  await expect(page.locator('.run-panel .run-prompt')).toBeVisible({ timeout: 60_000 });
  await page.locator('.run-prompt').fill('The capital of France is');
  await page.locator('.run-button').click();
  await expect(page.locator('.run-top').first()).toContainText('Paris', { timeout: 60_000 });
});

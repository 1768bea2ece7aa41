// Adapters and control vectors in the browser, on SmolLM2-135M (the second test server): a
// PEFT adapter in the patches folder loads as a layer, its module listed with a bar per layer
// of how much it changes, the module opening its delta view; the session's low-rank steps
// leave as a GGUF adapter; a control vector read from paired prompts steers the edited side's
// run, and the same file applied again gives the same run.
import { test, expect } from '@playwright/test';
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { llmPort } from '../playwright.config.mjs';
import { paths } from './paths.mjs';
import { resetSession, openTab } from './helpers.mjs';

test.use({ baseURL: `http://127.0.0.1:${llmPort}` });
test.describe.configure({ timeout: 180_000 });
test.beforeEach(async ({ request }) => resetSession(request));

const PATCHES = path.join(paths.work, 'smollm2', 'patches');
const Q = 'model.layers.3.self_attn.q_proj';

/** A safetensors file of F32 tensors. */
function safetensors(tensors) {
  const header = {};
  let at = 0;
  const parts = [];
  for (const [name, [shape, values]] of Object.entries(tensors)) {
    const bytes = Buffer.from(new Float32Array(values).buffer);
    header[name] = { dtype: 'F32', shape, data_offsets: [at, at + bytes.length] };
    at += bytes.length;
    parts.push(bytes);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, Buffer.from(json), ...parts]);
}

/** A rank-2 PEFT adapter of one query projection, in the server's patches folder. */
function writeAdapter(name) {
  const dir = path.join(PATCHES, name);
  mkdirSync(dir, { recursive: true });
  const wave = (n, k) => Array.from({ length: n }, (_, i) => 0.05 * Math.sin(0.37 * i + k));
  writeFileSync(path.join(dir, 'adapter_model.safetensors'), safetensors({
    [`base_model.model.${Q}.lora_A.weight`]: [[2, 576], wave(2 * 576, 1)],
    [`base_model.model.${Q}.lora_B.weight`]: [[576, 2], wave(576 * 2, 2)],
  }));
  writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] }));
}

test('a PEFT adapter loads as a layer, shows where it acts, and the session leaves as a GGUF adapter', async ({ page }) => {
  writeAdapter('peft-e2e');
  await page.goto('/?tab=patch');
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await page.getByLabel('adapter path').fill('peft-e2e');
  await page.locator('.load-adapter').click();
  const rows = page.locator('table.adapter-modules tbody tr');
  await expect(rows).toHaveCount(1, { timeout: 60_000 });
  await expect(rows.first()).toContainText(`${Q}.weight`);
  await expect(page.locator('canvas.adapter-layers[data-plot]')).toBeVisible();
  await expect(page.locator('ul.layers li[data-layer="adapter peft-e2e"]')).toBeVisible({ timeout: 60_000 });
  // The module opens the tensor's delta view.
  await rows.first().click();
  await expect(page).toHaveURL(/show=delta/);
  await expect(page).toHaveURL(new RegExp(`t=${Q}\\.weight`));
  // The session's low-rank steps (the adapter's module) leave as llama.cpp's adapter.
  await openTab(page, 'Patch');
  await page.getByLabel('adapter format').selectOption('gguf');
  await page.getByLabel('adapter name').fill('from-session');
  await page.locator('.export-adapter').click();
  await expect(page.locator('.adapter-written')).toContainText('from-session.gguf', { timeout: 60_000 });
  expect(existsSync(path.join(PATCHES, 'from-session.gguf'))).toBe(true);
});

test('a control vector read from paired prompts steers the edited side, and applied again runs the same', async ({ page }) => {
  await page.goto('/?tab=run');
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await expect(page.locator('.run-panel .run-prompt')).toBeVisible({ timeout: 60_000 });
  await page.locator('.steer-panel summary').click();
  await page.locator('.steer-positive').fill('I love this, it is wonderful\nWhat a beautiful, joyful day\nThe party was fantastic');
  await page.locator('.steer-negative').fill('I hate this, it is awful\nWhat a miserable, gloomy day\nThe party was terrible');
  await page.getByLabel('control vector method').selectOption('mean');
  await page.getByLabel('control vector name').fill('mood-e2e.gguf');
  await page.locator('.steer-compute').click();
  await expect(page.locator('.steer-status')).toContainText('saved mood-e2e.gguf', { timeout: 60_000 });
  await expect(page.locator('.steer-path')).toHaveValue('mood-e2e.gguf');
  await page.locator('.steer-strength').fill('4');
  await page.locator('.steer-apply').click();
  await expect(page.locator('.steer-status')).toContainText('layers 1–29');
  const outcome = page.locator('.run-outcome');
  const run = async () => {
    await page.locator('.run-prompt').fill('Today I feel');
    await page.getByRole('button', { name: 'run prompt', exact: true }).click();
  };
  await run();
  await expect(outcome).not.toHaveAttribute('data-kl', '0', { timeout: 60_000 });
  const steered = await outcome.getAttribute('data-kl');
  expect(Number(steered)).toBeGreaterThan(0.01);
  // Cleared, the edited side is the base again.
  await page.locator('.steer-clear').click();
  await expect(page.locator('.steer-status')).toContainText('no control vector');
  await run();
  await expect(outcome).toHaveAttribute('data-kl', '0', { timeout: 60_000 });
  // The same file applied again gives the same run.
  await page.locator('.steer-apply').click();
  await expect(page.locator('.steer-status')).toContainText('layers 1–29');
  await run();
  await expect(outcome).toHaveAttribute('data-kl', steered, { timeout: 60_000 });
  await page.locator('.steer-clear').click();
  await expect(page.locator('.steer-status')).toContainText('no control vector');
});

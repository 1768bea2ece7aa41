// The README's screenshots (docs/screenshots), taken from the real app on SmolLM2-135M in
// headless Chromium at 1600x1000: the overview, a heatmap with the dock, and the dark theme.
// Usage: node bench/screenshots.mjs MODEL_DIR OUT_DIR
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { paths } from '../tests/paths.mjs';

const [model, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const port = 3197;
const token = 'screenshots-local-token';
const base = `http://127.0.0.1:${port}`;
const server = spawn(paths.bin, ['serve', '--model', model, '--addr', `127.0.0.1:${port}`, '--token', token, '--patches', path.join(paths.work, 'screenshots')], {
  stdio: 'ignore',
  env: { ...process.env, LEPTOS_SITE_ROOT: paths.siteRoot, LEPTOS_SITE_PKG_DIR: 'pkg', LEPTOS_OUTPUT_NAME: 'tensor-surgeon' },
});
try {
  for (let i = 0; i < 300; i++) {
    try { if ((await fetch(`${base}/api/model`, { headers: { Authorization: `Bearer ${token}` } })).ok) break; } catch { /* starting */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  for (const scheme of ['light', 'dark']) {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, colorScheme: scheme });
    await page.goto(`${base}/?token=${token}`);
    await page.waitForSelector('.app[data-hydrated="true"]');
    await page.waitForFunction(() => document.querySelector('.map-progress')?.textContent.startsWith('scanned'));
    if (scheme === 'light') await page.screenshot({ path: path.join(out, 'overview.png') });
    await page.goto(`${base}/?t=model.layers.10.mlp.down_proj.weight&tab=stats`);
    await page.waitForSelector('canvas.cells[data-draws]');
    await page.waitForSelector('canvas.histogram[data-plot]');
    // JPEG: a heatmap of noise-like weights does not compress as PNG.
    await page.screenshot({ path: path.join(out, scheme === 'light' ? 'heatmap-dock.jpg' : 'dark.jpg'), type: 'jpeg', quality: 82 });
    await page.close();
  }
  await browser.close();
} finally {
  server.kill('SIGTERM');
}

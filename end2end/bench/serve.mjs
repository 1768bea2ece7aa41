// What every browser benchmark starts with: the real server on a model (waited for until it
// answers) and a headless Chromium, logged in by the address the server prints.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { paths } from '../tests/paths.mjs';

/** Starts the server on `model` at `port` and a browser; returns { base, server, browser, page }. */
export async function startBench({ model, port, token, viewport }) {
  const base = `http://127.0.0.1:${port}`;
  const server = spawn(paths.bin, ['serve', '--model', model, '--addr', `127.0.0.1:${port}`, '--token', token], {
    stdio: 'ignore',
    env: { ...process.env, LEPTOS_SITE_ROOT: paths.siteRoot, LEPTOS_SITE_PKG_DIR: 'pkg', LEPTOS_OUTPUT_NAME: 'tensor-surgeon' },
  });
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`${base}/api/model`, { headers: { Authorization: `Bearer ${token}` } })).ok) break; } catch { await new Promise((r) => setTimeout(r, 100)); }
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport });
  // The address the server prints: the token becomes the session cookie.
  await page.goto(`${base}/?token=${token}`);
  return { base, server, browser, page };
}

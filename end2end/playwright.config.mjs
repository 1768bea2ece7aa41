// Playwright drives the system Chromium (no browser download) against the real server,
// started by start-server.mjs on a fresh copy of the demo model.
import { defineConfig } from '@playwright/test';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { paths } from './tests/paths.mjs';
import { TOKEN } from './tests/token.mjs';

const port = Number(process.env.TS_E2E_PORT || 3107);
// A second server on a real language model (SmolLM2-135M) for the run panel's tests.
export const llmPort = port + 1;
// A third on a GGUF file (SmolLM2-135M's Q4_1 GGUF as its package ships it).
export const ggufPort = port + 2;

// Every test starts logged in: the cookie each server sets for the address it prints
// (auth.spec.mjs checks that exchange itself, from a browser without it).
const storageState = path.join(paths.work, 'auth.json');
mkdirSync(paths.work, { recursive: true });
const cookie = (p) => ({
  name: `tensor-surgeon-${p}`, value: TOKEN, domain: '127.0.0.1', path: '/', expires: -1,
  httpOnly: true, secure: false, sameSite: 'Strict',
});
writeFileSync(storageState, JSON.stringify({ cookies: [cookie(port), cookie(llmPort), cookie(ggufPort)], origins: [] }));

export default defineConfig({
  testDir: './tests',
  timeout: 60_000,
  expect: { timeout: 15_000 },
  workers: 1,
  fullyParallel: false,
  retries: 0,
  reporter: [['list']],
  outputDir: './test-results',
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    storageState,
    screenshot: 'only-on-failure',
    acceptDownloads: true,
    viewport: { width: 1600, height: 1200 },
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--no-sandbox', '--headless', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
        '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    },
  },
  webServer: [
    {
      command: `node start-server.mjs ${port}`,
      url: `http://127.0.0.1:${port}/`,
      timeout: 120_000,
      reuseExistingServer: false,
      stdout: 'pipe',
      stderr: 'pipe',
    },
    {
      command: `node start-server.mjs ${llmPort} smollm2`,
      url: `http://127.0.0.1:${llmPort}/`,
      timeout: 300_000,
      reuseExistingServer: false,
      stdout: 'pipe',
      stderr: 'pipe',
    },
    {
      command: `node start-server.mjs ${ggufPort} smollm2-gguf`,
      url: `http://127.0.0.1:${ggufPort}/`,
      timeout: 300_000,
      reuseExistingServer: false,
      stdout: 'pipe',
      stderr: 'pipe',
    },
  ],
});

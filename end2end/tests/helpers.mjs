// Shared steps of the browser tests.
import { expect } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { paths } from './paths.mjs';
import { TOKEN } from './token.mjs';

/** An MCP client over HTTP at /mcp; agents send the server's token as a Bearer header. */
export async function mcpClient(baseURL, token = TOKEN) {
  const client = new Client({ name: 'tensor-surgeon-tests', version: '1.0.0' });
  const requestInit = { headers: { Authorization: `Bearer ${token}` } };
  await client.connect(new StreamableHTTPClientTransport(new URL('/mcp', baseURL), { requestInit }));
  return client;
}

/** Runs the CLI and parses its JSON output. */
export function cli(...args) {
  return JSON.parse(execFileSync(paths.bin, args, { encoding: 'utf8' }));
}

/** Undoes every edit of the session, so each test starts from the base model. */
export async function resetSession(request) {
  let s = await (await request.get('/api/session')).json();
  for (let i = 0; s.can_undo && i < 5000; i++) {
    expect((await request.post('/api/undo', { data: {} })).ok()).toBeTruthy();
    s = await (await request.get('/api/session')).json();
  }
  expect(s.can_undo, 'the session was undone back to the base model').toBe(false);
}

/** Brings a tab of the dock to the front (Cell, Region, Tokens, Stats, Project, Patch, Run). */
export async function openTab(page, name) {
  const tab = page.getByRole('tab', { name, exact: true });
  await tab.click();
  await expect(tab).toHaveAttribute('aria-selected', 'true');
}

/** Opens the page at a query string and waits for the client to hydrate and draw. */
export async function openView(page, query) {
  await page.goto(`/${query}`);
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await expect(page.locator('canvas.cells[data-plot]')).toBeVisible();
  await expect(page.locator('.view-status')).toBeVisible();
}

/** The plot area of the heatmap: left, top, width, height in canvas pixels. */
export async function plotArea(page) {
  const v = await page.locator('canvas.cells').getAttribute('data-plot');
  const [left, top, width, height] = v.split(',').map(Number);
  return { left, top, width, height };
}

/** Canvas pixel at the centre of view cell (row, col) of a rows x cols view. */
export async function cellCenter(page, rows, cols, row, col) {
  const g = await plotArea(page);
  return { x: g.left + ((col + 0.5) * g.width) / cols, y: g.top + ((row + 0.5) * g.height) / rows };
}

/** The RGBA of the drawn heatmap at a canvas pixel. */
export async function pixel(page, x, y) {
  return page.locator('canvas.cells').evaluate((c, [x, y]) => Array.from(c.getContext('2d').getImageData(Math.floor(x), Math.floor(y), 1, 1).data), [x, y]);
}

/** Clicks view cell (row, col). */
export async function clickCell(page, rows, cols, row, col, options = {}) {
  const p = await cellCenter(page, rows, cols, row, col);
  await page.locator('canvas.overlay').click({ position: p, ...options });
}

/** Waits until the heatmap pixel at a cell differs from `before`. */
export async function waitPixelChange(page, p, before) {
  await expect.poll(async () => JSON.stringify(await pixel(page, p.x, p.y))).not.toBe(JSON.stringify(before));
}

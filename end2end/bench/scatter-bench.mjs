// The projection scatter at 50,000 points (headless Chromium, debug or release WASM): the time
// from a drag event to the redrawn 3-D scatter, median of 40 drags, beside the same page
// drawing the same points one canvas path per point (the usual way, and the reference).
// Usage: node bench/scatter-bench.mjs   (writes its model to a temporary folder)
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { paths } from '../tests/paths.mjs';
import { startBench } from './serve.mjs';

const N = 50_000;
const dir = mkdtempSync(path.join(tmpdir(), 'scatter-bench-'));
const model = path.join(dir, 'points.safetensors');
execFileSync(path.join(paths.root, '.venv', 'bin', 'python'), ['-c', `
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
centres = rng.normal(size=(20, 16)) * 4
x = (centres[rng.integers(0, 20, ${N})] + rng.normal(size=(${N}, 16))).astype(np.float32)
save_file({"points": x}, "${model}")
`]);
const { base, server, browser, page } = await startBench({
  model, port: 3198, token: 'scatter-bench-local-token', viewport: { width: 1600, height: 1000 },
});
await page.goto(`${base}/?t=points&tab=project`);
await page.waitForSelector('.app[data-hydrated="true"]');
await page.locator('.project-dims').selectOption('3');
await page.locator('.project-run').click();
const canvas = page.locator('canvas.scatter');
await page.waitForFunction((n) => document.querySelector('canvas.scatter')?.dataset.n === String(n), N, { timeout: 120_000 });
const box = await canvas.boundingBox();
const [cx, cy] = [box.x + box.width / 2, box.y + box.height / 2];

// Ours: each drag step redraws all 50,000 points (rotate, project, pixel buffer, blit).
const ours = [];
await page.mouse.move(cx, cy);
await page.mouse.down();
for (let i = 1; i <= 40; i++) {
  const before = await canvas.evaluate((c) => Number(c.dataset.draws));
  const t = await page.evaluate(() => performance.now());
  await page.mouse.move(cx + i * 3, cy + (i % 7));
  await page.waitForFunction((n) => Number(document.querySelector('canvas.scatter').dataset.draws) > n, before);
  ours.push((await page.evaluate(() => performance.now())) - t);
}
await page.mouse.up();

// The reference: the same number of points drawn one path (arc) per point on a canvas of the
// same size, in the same page.
const reference = await page.evaluate((n) => {
  const c = document.createElement('canvas');
  c.width = 432;
  c.height = 420;
  document.body.appendChild(c);
  const g = c.getContext('2d');
  const pts = Array.from({ length: n }, (_, i) => [(Math.sin(i) + 1) * 200, (Math.cos(i * 1.3) + 1) * 200]);
  const times = [];
  for (let r = 0; r < 15; r++) {
    const t = performance.now();
    g.clearRect(0, 0, c.width, c.height);
    for (const [x, y] of pts) {
      g.beginPath();
      g.arc(x, y, 1.5, 0, 2 * Math.PI);
      g.fillStyle = '#3b528b';
      g.fill();
    }
    g.getImageData(0, 0, 1, 1); // wait for the drawing to finish
    times.push(performance.now() - t);
  }
  return times;
}, N);

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const [a, b] = [median(ours), median(reference)];
console.log('| benchmark | ours | reference | ratio (ours / ref) |');
console.log('|---|---|---|---|');
console.log(`| 3-D scatter of ${N.toLocaleString('en')} points: drag event to redrawn canvas (median of 40) | ${a.toFixed(1)} ms | one canvas path per point: ${b.toFixed(1)} ms | **${(a / b).toFixed(2)}x** |`);
await browser.close();
server.kill();

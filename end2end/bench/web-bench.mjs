// Browser benchmarks, side by side in one run (headless Chromium, same page):
//  - heatmap draw time of 512x512 and 1024x1024 views vs Plotly.js drawing the same data;
//  - click on a 4096x4096 BF16 tensor -> pooled heatmap drawn;
//  - one-cell edit round trip (request, journal fsync, response, refetch, redraw).
// Usage: node bench/web-bench.mjs MODEL_DIR   (MODEL_DIR from benches/compare.py --web)
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { paths } from '../tests/paths.mjs';
import { startBench } from './serve.mjs';

const require = createRequire(import.meta.url);
const model = process.argv[2];
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const token = 'web-bench-local-token';
const { base, server, browser, page } = await startBench({ model, port: 3199, token, viewport: { width: 1600, height: 1200 } });
const rows = [];

async function open(query) {
  await page.goto(`${base}/${query}`);
  await page.waitForSelector('.app[data-hydrated="true"]');
  await page.waitForSelector('canvas.cells[data-draws]');
}
const draws = () => page.locator('canvas.cells').evaluate((c) => Number(c.dataset.draws || 0));
/** Clicks `selector` inside the page; resolves with the ms until the heatmap is redrawn with
 *  data that satisfies `done(canvas.dataset, before)` (a new tensor, a newer edit version). */
async function clickToDraw(selector, done) {
  return page.evaluate(([sel, doneSrc]) => new Promise((resolve) => {
    const canvas = document.querySelector('canvas.cells');
    const before = { ...canvas.dataset };
    const isDone = new Function('d', 'before', `return (${doneSrc})(d, before)`);
    const obs = new MutationObserver(() => {
      if (isDone(canvas.dataset, before)) { obs.disconnect(); resolve(performance.now() - start); }
    });
    obs.observe(canvas, { attributes: true, attributeFilter: ['data-draws'] });
    const start = performance.now();
    document.querySelector(sel).click();
  }), [selector, done.toString()]);
}
async function waitDraw(after) {
  await page.waitForFunction((n) => Number(document.querySelector('canvas.cells')?.dataset.draws || 0) > n, after);
}

// 1. Draw time vs Plotly, same data, same page. Both sides draw from data already in the page:
//    ours decodes, scales, paints the cells, blits and draws the axes and colour bar with
//    plotters (`data-draw-ms`); Plotly's is `await Plotly.newPlot` (static plot: cells, axes,
//    colour bar). When our view is pooled, Plotly gets the same pooled grid (max|x| per block,
//    as the server pools); a second row gives it the full grid and says it draws more cells.
const poolMaxAbs = (z, n, by) => {
  const m = n / by;
  const out = new Array(m * m);
  for (let r = 0; r < m; r++) for (let c = 0; c < m; c++) {
    let best = z[r * by * n + c * by];
    for (let i = 0; i < by; i++) for (let j = 0; j < by; j++) {
      const v = z[(r * by + i) * n + c * by + j];
      if (Math.abs(v) > Math.abs(best)) best = v;
    }
    out[r * m + c] = best;
  }
  return out;
};
async function plotly(z, n) {
  return page.evaluate(async ([z, n]) => {
    const grid = [];
    for (let r = 0; r < n; r++) grid.push(z.slice(r * n, (r + 1) * n));
    const div = document.createElement('div');
    div.style.cssText = 'width:960px;height:760px;position:absolute;left:0;top:1300px';
    document.body.appendChild(div);
    const times = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await Plotly.newPlot(div, [{ z: grid, type: 'heatmap', colorscale: 'Viridis' }], { width: 960, height: 760 }, { staticPlot: true });
      times.push(performance.now() - t0);
      Plotly.purge(div);
    }
    div.remove();
    return times;
  }, [z, n]);
}
for (const n of [512, 1024]) {
  const name = `f32_${n}`;
  await open(`?t=${name}&sc=minmax&cm=viridis`);
  const ours = [];
  for (let i = 0; i < 7; i++) {
    const before = await draws();
    // Switching the colour scale redraws from the same data (no fetch).
    await page.getByLabel('scale').selectOption(i % 2 ? 'minmax' : 'sym');
    await waitDraw(before);
    ours.push(await page.locator('canvas.cells').evaluate((c) => Number(c.dataset.drawMs)));
  }
  const status = (await page.locator('.view-status').textContent()).trim();
  await page.addScriptTag({ path: require.resolve('plotly.js-dist-min') });
  const z = JSON.parse(execFileSync(paths.bin, ['slice', model, name, '--json'], { encoding: 'utf8', maxBuffer: 1 << 30 })).values;
  const block = status.match(/blocks of (\d+) x (\d+)/);
  if (block) {
    const by = Number(block[1]);
    const m = n / by;
    rows.push([`draw ${n}x${n} F32 view, pooled to ${m}x${m} blocks of ${by}x${by}`, `Plotly.js heatmap of the same ${m}x${m} pooled grid (max|x|), same page`, median(ours), median(await plotly(poolMaxAbs(z, n, by), m))]);
    rows.push([`draw ${n}x${n} F32 view, pooled to ${m}x${m} blocks of ${by}x${by}`, `Plotly.js heatmap of the full ${n}x${n} grid (draws ${by * by}x the cells)`, median(ours), median(await plotly(z, n))]);
  } else {
    rows.push([`draw ${n}x${n} F32 view (exact cells)`, 'Plotly.js heatmap of the same data, same page', median(ours), median(await plotly(z, n))]);
  }
}

// 2. Click on a 4096x4096 BF16 tensor -> pooled heatmap drawn.
const clicks = [];
for (let i = 0; i < 5; i++) {
  await open('?t=f32_512');
  clicks.push(await clickToDraw('a[data-tensor="bf16_4096"]', (d) => d.tensor === 'bf16_4096'));
}
rows.push(['click 4096x4096 BF16 tensor -> pooled heatmap drawn', 'target 150 ms', median(clicks), 150]);

// 3. One-cell edit round trip.
await open('?t=f32_512&ys=0:64&xs=0:64');
const g = (await page.locator('canvas.cells').getAttribute('data-plot')).split(',').map(Number);
await page.locator('canvas.overlay').click({ position: { x: g[0] + g[2] / 128, y: g[1] + g[3] / 128 } });
await page.waitForSelector('.cell-value');
const edits = [];
for (let i = 0; i < 11; i++) {
  await page.getByLabel('edit value').fill(String(i + 0.5));
  edits.push(await clickToDraw('.edit-panel button[type=submit]', (d, before) => Number(d.version) > Number(before.version)));
}
rows.push(['one-cell edit round trip (request, fsync, response, redraw)', 'target 30 ms', median(edits), 30]);

for (let i = 0; i < 11; i++) await fetch(`${base}/api/undo`, { method: 'POST', headers: { 'content-type': 'application/json', Authorization: `Bearer ${token}` }, body: '{}' });
await browser.close();
server.kill('SIGTERM');
console.log(JSON.stringify(rows));

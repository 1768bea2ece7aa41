// The workspace as a user first meets it: a scale that shows real weights (SmolLM2's MLP, whose
// few outlier channels wash out ±max|x|), the heatmap staying in view while the dock's tabs
// change at 1600x1000, the overview's layer map opening a tensor, Ctrl-K, the shortcuts,
// the dark theme, and axe-core's accessibility checks (names and contrast).
import { test, expect } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { llmPort } from '../playwright.config.mjs';
import { resetSession, openView, openTab } from './helpers.mjs';

const q = (params) => '?' + new URLSearchParams(params).toString();
const OUTLIER = 'model.layers.2.self_attn.o_proj.weight';

/** Per pixel of the heatmap's plot area: its RGB distance from the diverging map's centre. */
async function distancesFromCentre(page) {
  const canvas = page.locator('canvas.cells');
  const [left, top, width, height] = (await canvas.getAttribute('data-plot')).split(',').map(Number);
  return canvas.evaluate((c, g) => {
    const d = c.getContext('2d').getImageData(g.left + 1, g.top + 1, g.width - 2, g.height - 2).data;
    const out = [];
    // The centre of RdBu (colorous), where zero sits.
    for (let i = 0; i < d.length; i += 4) out.push(Math.hypot(d[i] - 247, d[i + 1] - 247, d[i + 2] - 247));
    return out.sort((a, b) => a - b);
  }, { left, top, width, height });
}

test.describe('on SmolLM2', () => {
  test.use({ baseURL: `http://127.0.0.1:${llmPort}` });

  test('the default scale shows the structure of an MLP weight with outlier channels', async ({ page }) => {
    const t = 'model.layers.10.mlp.down_proj.weight';
    await openView(page, q({ t }));
    await expect(page.locator('.scale-note')).toContainText('robust: 99.9th percentile of |x|');
    expect(Number(await page.locator('.scale-note').getAttribute('data-clipped'))).toBeGreaterThan(0);
    await expect(page.locator('.scale-note')).toContainText('true range -4.78');
    const auto = await distancesFromCentre(page);
    // The middle 98% of cells: far more than a few colour steps from the centre.
    const middle = auto.slice(Math.floor(auto.length * 0.01), Math.ceil(auto.length * 0.99));
    const far = middle.filter((v) => v > 40).length / middle.length;
    expect(far).toBeGreaterThan(0.5);
    // The old default (±max|x|) washes the same view out: nearly every cell near white.
    await openView(page, q({ t, sc: 'sym' }));
    await expect(page.locator('.scale-note')).toContainText('max |x|');
    const sym = await distancesFromCentre(page);
    const washed = sym.slice(Math.floor(sym.length * 0.01), Math.ceil(sym.length * 0.99)).filter((v) => v > 40).length / middle.length;
    expect(washed).toBeLessThan(0.2);
    // Symmetric log: the bulk visible, nothing clipped.
    await openView(page, q({ t, sc: 'symlog' }));
    await expect(page.locator('.scale-note')).toHaveAttribute('data-clipped', '0');
    const log = await distancesFromCentre(page);
    expect(log.filter((v) => v > 40).length / log.length).toBeGreaterThan(washed);
  });

  test('the overview says what the model is and maps its 30 layers', async ({ page }) => {
    await page.goto('/');
    await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
    await expect(page.locator('.overview h2')).toHaveText('LlamaForCausalLM (llama)');
    await expect(page.locator('.overview .arch')).toContainText('num_hidden_layers');
    await expect(page.locator('.overview .kinds tr').first()).toContainText('model.embed_tokens');
    await expect(page.locator('.layer-map .map-row')).toHaveCount(31); // the header and 30 layers
    await expect(page.locator('.map-progress')).toContainText('scanned 272 tensors', { timeout: 60_000 });
    // The run panel of a model that runs: named controls, enough contrast.
    await openTab(page, 'Run');
    await expect(page.locator('.run-panel .run-prompt')).toBeVisible({ timeout: 60_000 });
    const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
    expect(result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(' | ')}`)).toEqual([]);
  });
});

test.describe('on the demo model', () => {
  test.use({ viewport: { width: 1600, height: 1000 } });
  test.beforeEach(async ({ request }) => resetSession(request));

  test('the heatmap stays in view while the tabs change, and the page never grows', async ({ page, request }) => {
    test.setTimeout(180_000);
    // A long session first: the patch table must not make the page grow.
    for (let i = 0; i < 60; i++) {
      const r = await request.post('/api/edit', { data: { request: { tensor: 'model.embed_tokens.weight', spec: `${i},0:4`, op: { op: 'set', value: String(i) } } } });
      expect(r.ok()).toBeTruthy();
    }
    await openView(page, q({ t: 'model.embed_tokens.weight' }));
    const canvas = page.locator('canvas.cells');
    const box = await canvas.boundingBox();
    const inView = (b) => b.x >= 0 && b.y >= 0 && b.x + b.width <= 1600 && b.y + b.height <= 1000;
    expect(inView(box), JSON.stringify(box)).toBe(true);
    for (const tab of ['Region', 'Tokens', 'Stats', 'Project', 'Patch', 'Run', 'Cell']) {
      await openTab(page, tab);
      expect(await canvas.boundingBox()).toEqual(box);
      const page_ = await page.evaluate(() => [document.documentElement.scrollHeight, document.documentElement.scrollWidth]);
      expect(page_[0], `${tab}: the page is one screen high`).toBeLessThanOrEqual(1000);
      expect(page_[1], `${tab}: and one screen wide`).toBeLessThanOrEqual(1600);
    }
    // 240 changed elements, a page of 50 at a time.
    await openTab(page, 'Patch');
    await expect(page.locator('.patch-panel .page-note')).toHaveText('entries 1–50 of 240');
    await expect(page.locator('.patch-panel .entries tbody tr')).toHaveCount(50);
    await page.getByRole('button', { name: 'next entries' }).click();
    await expect(page.locator('.patch-panel .page-note')).toHaveText('entries 51–100 of 240');
    await expect(page.locator('.patch-panel .entries tbody tr').first()).toContainText('[12, 2]');
    await expect(page.locator('.history .steps')).toHaveText('60 step(s)');
  });

  test('the overview map opens a tensor on click; flagged tensors are outlined', async ({ page }) => {
    await page.goto('/');
    await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
    await expect(page.locator('.map-progress')).toContainText('scanned', { timeout: 30_000 });
    const cell = page.locator(`.map-cell[data-tensor="${OUTLIER}"]`);
    await expect(cell).toHaveClass(/flagged/);
    await expect(cell).toHaveAttribute('aria-label', new RegExp(`^${OUTLIER.replaceAll('.', '\\.')}: std `));
    await cell.click();
    await expect(page).toHaveURL(new RegExp(`t=${OUTLIER.replaceAll('.', '\\.')}`));
    await expect(page.locator('.tensor-name')).toHaveText(OUTLIER);
    await expect(page.locator('canvas.cells[data-draws]')).toBeVisible();
    // `o` goes back to the overview.
    await page.locator('body').press('o');
    await expect(page.locator('.overview')).toBeVisible();
  });

  test('Ctrl-K opens a tensor by fuzzy name; ? lists the shortcuts; digits pick tabs', async ({ page }) => {
    await openView(page, q({ t: 'model.embed_tokens.weight' }));
    await page.locator('body').press('Control+k');
    const input = page.getByLabel('tensor name (fuzzy)');
    await expect(input).toBeFocused();
    await input.fill('l2 oproj');
    await expect(page.locator('.switcher-hits li').first()).toHaveText(OUTLIER);
    await input.press('Enter');
    await expect(page).toHaveURL(new RegExp(`t=${OUTLIER.replaceAll('.', '\\.')}`));
    await expect(page.getByRole('dialog', { name: 'open a tensor' })).toHaveCount(0);
    await expect(page.locator('.tensor-name')).toHaveText(OUTLIER);
    // Arrow keys choose among the matches.
    await page.locator('body').press('Control+k');
    await input.fill('norm');
    const second = await page.locator('.switcher-hits li').nth(1).textContent();
    await input.press('ArrowDown');
    await input.press('Enter');
    await expect(page.locator('.tensor-name')).toHaveText(second);
    await page.locator('body').press('?');
    const help = page.getByRole('dialog', { name: 'keyboard shortcuts' });
    await expect(help).toContainText('open a tensor by (fuzzy) name');
    await page.locator('body').press('Escape');
    await expect(help).toHaveCount(0);
    await page.locator('body').press('6');
    await expect(page.getByRole('tab', { name: 'Patch' })).toHaveAttribute('aria-selected', 'true');
    await expect(page).toHaveURL(/tab=patch/);
  });

  test('the dark theme follows the system setting, canvases included', async ({ browser, baseURL }) => {
    for (const [scheme, dark] of [['dark', true], ['light', false]]) {
      const context = await browser.newContext({ colorScheme: scheme, baseURL, storageState: test.info().project.use.storageState });
      const page = await context.newPage();
      await openView(page, q({ t: 'model.embed_tokens.weight' }));
      const lum = ([r, g, b]) => (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor.match(/\d+/g).map(Number));
      const corner = await page.locator('canvas.cells').evaluate((c) => [...c.getContext('2d').getImageData(3, 3, 1, 1).data]);
      expect(lum(bg) < 0.2, `${scheme} page`).toBe(dark);
      expect(lum(corner) < 0.2, `${scheme} canvas`).toBe(dark);
      await context.close();
    }
  });

  test('axe-core finds no accessibility violations (names, roles, contrast) in either theme', async ({ browser, baseURL }) => {
    test.setTimeout(300_000);
    const found = [];
    for (const scheme of ['light', 'dark']) {
      const context = await browser.newContext({ colorScheme: scheme, baseURL, storageState: test.info().project.use.storageState, viewport: { width: 1600, height: 1000 } });
      const page = await context.newPage();
      for (const where of ['/', q({ t: 'model.embed_tokens.weight', ys: '0:8', xs: '0:8' }), q({ scan: '1' })]) {
        await page.goto(`/${where.replace(/^\//, '')}`);
        await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
        for (const tab of ['Cell', 'Region', 'Tokens', 'Stats', 'Project', 'Patch', 'Run']) {
          await openTab(page, tab);
          const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
          for (const v of result.violations) found.push(`${scheme} ${where} ${tab}: ${v.id}: ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(' | ')}`);
        }
      }
      // The dialogs: the switcher and the shortcuts.
      for (const key of ['Control+k', '?']) {
        await page.locator('body').press(key);
        await expect(page.getByRole('dialog')).toBeVisible();
        const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
        for (const v of result.violations) found.push(`${scheme} dialog ${key}: ${v.id}: ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(' | ')}`);
        await page.keyboard.press('Escape');
        await expect(page.getByRole('dialog')).toHaveCount(0);
      }
      await context.close();
    }
    expect([...new Set(found)]).toEqual([]);
  });
});

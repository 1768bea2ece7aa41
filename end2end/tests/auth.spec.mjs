// Nobody but the user in: a browser without the token is turned away with instructions; the
// address the server prints logs it in (an HttpOnly, SameSite=Strict cookie), and the app then
// works: client-side requests and the heatmap included.
import { test, expect } from '@playwright/test';
import { TOKEN } from './token.mjs';

test.use({ storageState: { cookies: [], origins: [] } });

test('the printed address logs a browser in; without it nothing is served', async ({ page, context, baseURL }) => {
  const refused = await page.goto('/?t=model.embed_tokens.weight');
  expect(refused.status()).toBe(401);
  await expect(page.getByRole('heading', { name: 'Token needed' })).toBeVisible();
  await expect(page.locator('canvas')).toHaveCount(0);
  const wrong = await page.goto('/?token=not-the-token');
  expect(wrong.status()).toBe(401);

  await page.goto(`/?t=model.embed_tokens.weight&token=${TOKEN}`);
  // Redirected to the same view without the token in the address (or the history).
  expect(page.url()).toBe(`${baseURL}/?t=model.embed_tokens.weight`);
  await expect(page.locator('.app[data-hydrated="true"]')).toBeVisible();
  await expect(page.locator('canvas.cells[data-draws]')).toBeVisible();
  const [cookie] = (await context.cookies()).filter((c) => c.name.startsWith('tensor-surgeon-'));
  expect(cookie.value).toBe(TOKEN);
  expect(cookie.httpOnly).toBe(true);
  expect(cookie.sameSite).toBe('Strict');
  expect(await page.evaluate(() => document.cookie), 'page scripts cannot read it').toBe('');
  // A request from the page (the client's own fetch) carries the cookie.
  const status = await page.evaluate(async () => (await fetch('/api/session')).status);
  expect(status).toBe(200);
});

// The UI served by the container, loaded in headless Chromium as a user opens it: with the
// token URL the server printed in `docker logs`. Fails on any page or console error, and
// unless the device cards and the launch form are drawn. Run by `cargo xtask docker` with
// GPULAB_URL and GPULAB_TOKEN; not a `node --test` file, as it needs a container.

import { chromium } from 'playwright-core';

const BASE_URL = (process.env.GPULAB_URL ?? '').replace(/\/+$/, '');
const TOKEN = process.env.GPULAB_TOKEN ?? '';
const CHROMIUM = process.env.GPULAB_CHROMIUM ?? '/usr/bin/chromium';

if (!BASE_URL || !TOKEN) {
  console.error('set GPULAB_URL and GPULAB_TOKEN to a running container and its token');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const errors = [];
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(20_000);
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console error: ${message.text()}`);
  });
  // CSP violations are console errors too: the policy the server sends must let the UI run.
  const started = Date.now();
  await page.goto(`${BASE_URL}/?token=${encodeURIComponent(TOKEN)}`);
  await page.locator('[data-testid="device-card-cpu"]').waitFor();
  const cardMs = Date.now() - started;
  const shownUrl = page.url();
  if (shownUrl.includes('token=')) errors.push(`the token stays in the address bar: ${shownUrl}`);
  // A page the UI routes itself, loaded directly, and a read that needs the token.
  await page.goto(`${BASE_URL}/jobs`);
  await page.locator('[data-testid="job-row"]').first().waitFor();
  await page.goto(`${BASE_URL}/launch`);
  await page.locator('[data-testid="launch-form"]').waitFor();
  console.log(`the UI from the container: device card after ${cardMs} ms, jobs and launch pages drawn`);
} catch (error) {
  errors.push(String(error));
} finally {
  await browser.close();
}
if (errors.length) {
  console.error(`the UI from the container failed:\n${errors.join('\n')}`);
  process.exit(1);
}

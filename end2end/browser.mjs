// The browser harness every test file shares: one headless Chromium per file, pages that
// fail their test on any page or console error, and the server's URL and API.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const BASE_URL = (process.env.GPULAB_URL ?? '').replace(/\/+$/, '');
export const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url));
const CHROMIUM = process.env.GPULAB_CHROMIUM ?? '/usr/bin/chromium';
// For the tests that start a server of their own (servers.mjs, which a script without
// node:test can use too): the gpulab binary, the built UI, starting and stopping.
export { GPULAB_BIN, GPULAB_STATIC_DIR, freePort, killed, startServer } from './servers.mjs';
export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 900 };

let browser;

before(async () => {
  assert.ok(BASE_URL, 'set GPULAB_URL to the URL of a running gpulab server');
  await mkdir(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
});

// Runs `body` with a fresh page that records page errors, console errors and the requests
// it makes; saves a screenshot named `name` and fails on any error, whatever `body` did,
// except those `expectedErrors` match. `context` adds to the browser context's options.
export async function withPage(name, body, { context: contextOptions = {}, expectedErrors = [] } = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, ...contextOptions });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const errors = [];
  const requests = [];
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    const expected = expectedErrors.some((pattern) => pattern.test(message.text()));
    if (message.type() === 'error' && !expected) errors.push(`console error: ${message.text()}`);
  });
  page.on('request', (request) => requests.push(`${request.method()} ${new URL(request.url()).pathname}`));
  try {
    await body(page, requests, context);
  } finally {
    await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true }).catch(() => {});
    await context.close();
  }
  assert.deepEqual(errors, [], `the page reported errors:\n${errors.join('\n')}`);
}

export async function api(path) {
  const response = await fetch(`${BASE_URL}${path}`);
  assert.equal(response.status, 200, `GET ${path}`);
  const type = response.headers.get('content-type') ?? '';
  return type.includes('json') ? response.json() : response.text();
}

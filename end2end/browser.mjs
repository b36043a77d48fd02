// The browser harness every test file shares: one headless Chromium per file, pages that
// fail their test on any page or console error, and the server's URL and API.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const BASE_URL = (process.env.GPULAB_URL ?? '').replace(/\/+$/, '');
export const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url));
const CHROMIUM = process.env.GPULAB_CHROMIUM ?? '/usr/bin/chromium';
// For the tests that start a server of their own: the gpulab binary and the built UI.
export const GPULAB_BIN = process.env.GPULAB_BIN;
export const GPULAB_STATIC_DIR = process.env.GPULAB_STATIC_DIR;
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

// Starts `gpulab serve` on `port`, resolving once it listens; the process is returned. `env`
// adds to the environment, such as GPULAB_TOKEN.
export async function startServer(port, dataDir, env = {}) {
  const child = spawn(
    GPULAB_BIN,
    ['serve', '--addr', `127.0.0.1:${port}`, '--static-dir', GPULAB_STATIC_DIR, '--data-dir', dataDir],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } },
  );
  await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('gpulab listening on ')) resolve();
    });
    child.on('exit', (code, signal) => reject(new Error(`gpulab exited (${code ?? signal}) before listening:\n${out}`)));
  });
  return child;
}

// A TCP port that was free a moment ago.
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Stops `child` with `signal` and waits until it has exited.
export function killed(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  return exited;
}

// The UI benchmark: what each page costs to load, how fast the devices page shows its
// cards, and how the jobs table pages with a long history. It prints figures; nothing fails
// when one misses its target.
//
// `cargo xtask bench-ui` builds the UI, starts the release server with a fresh data folder
// and runs this with GPULAB_URL; by hand: GPULAB_URL=http://127.0.0.1:8080 node bench-ui.mjs
// (the jobs part adds 1,000 small jobs to that server's history).

import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

import { chromium } from 'playwright-core';

const BASE_URL = (process.env.GPULAB_URL ?? '').replace(/\/+$/, '');
const CHROMIUM = process.env.GPULAB_CHROMIUM ?? '/usr/bin/chromium';
const COLD_LOADS = 10;
const HISTORY = 1000;
const PAGE_TURNS = 10;
const SIZE_TARGET_KB = 500;
const TIME_TARGET_MS = 1000;

if (!BASE_URL) {
  console.error('set GPULAB_URL to the URL of a running gpulab server');
  process.exit(2);
}

const kb = (bytes) => `${(bytes / 1000).toFixed(1)} KB`;
const ms = (t) => `${t.toFixed(0)} ms`;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const verdict = (value, target) => (value <= target ? 'met' : 'MISSED');

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
});

try {
  const devices = await (await fetch(`${BASE_URL}/api/devices`)).json();
  // A job, for the jobs list and a job page.
  const job = await postSmallJob();
  // Every page of the UI, and what shows that it is drawn; the editor's page counts the code
  // editor it loads when opened.
  const pages = [];
  for (const [path, ready] of [
    ['/', '[data-testid="device-card-cpu"]'],
    ['/launch', '[data-testid="launch-form"]'],
    ['/jobs', '[data-testid="job-row"]'],
    [`/jobs/${job.id}`, '[data-testid="job-status"]'],
    ['/compare', 'main h1'],
    ['/editor', '[data-testid="code-editor"][data-state="ready"]'],
  ]) {
    pages.push(await transferSizes(path, ready));
  }
  printPageSummary(pages);
  await coldLoads(devices);
  await jobsPaging();
} finally {
  await browser.close();
}

async function postSmallJob() {
  const response = await fetch(`${BASE_URL}/api/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ kernel: 'vector_add', device: 'cpu', params: { n: 1 }, repetitions: 1 }),
  });
  if (!response.ok) throw new Error(`POST /api/jobs: ${response.status} ${await response.text()}`);
  return response.json();
}

// What a page downloads, in a new context (empty cache): each file's size, as the server
// sent it to Chromium and as gzip -9 and brotli 11 would make it.
async function transferSizes(path, ready) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const loaded = [];
  const recording = [];
  const record = async (request) => {
    const response = await request.response();
    const type = response?.headers()['content-type'] ?? '';
    const kind = ['wasm', 'javascript', 'css', 'html'].find((k) => type.includes(k));
    if (!kind || new URL(request.url()).pathname.startsWith('/api/')) return;
    const sizes = await request.sizes();
    loaded.push({
      kind,
      path: new URL(request.url()).pathname,
      encoding: response.headers()['content-encoding'] ?? 'identity',
      served: sizes.responseBodySize,
      body: await response.body(),
    });
  };
  page.on('requestfinished', (request) => recording.push(record(request)));
  await page.goto(`${BASE_URL}${path}`);
  await page.locator(ready).first().waitFor({ timeout: 30_000 });
  await page.waitForLoadState('load');
  await Promise.all(recording);
  await context.close();

  console.log(`\nThe page ${path} downloads:`);
  const total = { raw: 0, served: 0, gzip: 0, brotli: 0 };
  for (const file of loaded) {
    const gzip = gzipSync(file.body, { level: 9 }).length;
    const brotli = brotliCompressSync(file.body, {
      params: { [constants.BROTLI_PARAM_QUALITY]: 11 },
    }).length;
    console.log(
      `  ${file.kind.padEnd(10)} ${file.path.padEnd(46)} raw ${kb(file.body.length).padStart(10)}` +
        `  served ${kb(file.served).padStart(9)} (${file.encoding})  gzip -9 ${kb(gzip).padStart(9)}` +
        `  brotli 11 ${kb(brotli).padStart(9)}`,
    );
    if (file.kind === 'html') continue;
    total.raw += file.body.length;
    total.served += file.served;
    total.gzip += gzip;
    total.brotli += brotli;
  }
  console.log(
    `  WASM + JS + CSS: raw ${kb(total.raw)}, as served ${kb(total.served)}, gzip -9 ${kb(total.gzip)}, ` +
      `brotli 11 ${kb(total.brotli)}`,
  );
  return { path, ...total };
}

// Each page's WebAssembly, JavaScript and CSS against the budget: as the server sent them
// to Chromium (which takes brotli from 127.0.0.1), and as gzip -9 would make them (about
// what a browser gets that takes only gzip, as Chromium does over plain HTTP to another host).
function printPageSummary(pages) {
  console.log(`\nWASM + JS + CSS per page, target ≤ ${SIZE_TARGET_KB} KB compressed:`);
  for (const p of pages) {
    console.log(
      `  ${p.path.padEnd(9)} as served ${kb(p.served).padStart(9)} ${verdict(p.served / 1000, SIZE_TARGET_KB).padEnd(6)}` +
        `  gzip -9 ${kb(p.gzip).padStart(9)} ${verdict(p.gzip / 1000, SIZE_TARGET_KB).padEnd(6)}` +
        `  brotli 11 ${kb(p.brotli).padStart(9)}  raw ${kb(p.raw).padStart(10)}`,
    );
  }
}

// From navigation to every device card on screen, each load in a new context (empty cache).
async function coldLoads(devices) {
  const times = [];
  for (let i = 0; i < COLD_LOADS; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    // The moment the last card appears, measured in the page from its navigation start.
    await page.addInitScript((ids) => {
      const seen = () => ids.every((id) => document.querySelector(`[data-testid="device-card-${id}"]`));
      new MutationObserver((_, observer) => {
        if (seen()) {
          window.cardsVisibleAt = performance.now();
          observer.disconnect();
        }
      }).observe(document, { subtree: true, childList: true });
    }, devices.map((d) => d.id));
    await page.goto(`${BASE_URL}/`);
    await page.waitForFunction(() => window.cardsVisibleAt !== undefined, null, { timeout: 30_000 });
    times.push(await page.evaluate(() => window.cardsVisibleAt));
    await context.close();
  }
  const m = median(times);
  console.log(
    `\nNavigation to the device cards visible, ${COLD_LOADS} cold loads: median ${ms(m)} ` +
      `(min ${ms(Math.min(...times))}, max ${ms(Math.max(...times))}); target ≤ ${TIME_TARGET_MS} ms: ` +
      verdict(m, TIME_TARGET_MS),
  );
}

// The jobs table with a long history: the first page, then page turns both ways.
async function jobsPaging() {
  const started = performance.now();
  for (let i = 0; i < HISTORY; i++) {
    const response = await fetch(`${BASE_URL}/api/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ kernel: 'vector_add', device: 'cpu', params: { n: 1 }, repetitions: 1 }),
    });
    if (!response.ok) throw new Error(`POST /api/jobs: ${response.status} ${await response.text()}`);
  }
  const posting = performance.now() - started;

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const firstRow = () => page.locator('[data-testid="job-row"]').first().getAttribute('data-job-id');
  const navigationStart = Date.now();
  await page.goto(`${BASE_URL}/jobs`);
  await page.locator('[data-testid="job-row"]').first().waitFor();
  const firstPage = Date.now() - navigationStart;

  const turns = [];
  const turn = async (button) => {
    const before = await firstRow();
    const t0 = await page.evaluate(() => performance.now());
    await page.getByTestId(button).click();
    await page.waitForFunction(
      (before) => document.querySelector('[data-testid="job-row"]')?.dataset.jobId !== before,
      before,
    );
    turns.push((await page.evaluate(() => performance.now())) - t0);
  };
  for (let i = 0; i < PAGE_TURNS / 2; i++) await turn('jobs-older');
  for (let i = 0; i < PAGE_TURNS / 2; i++) await turn('jobs-newer');
  await context.close();

  console.log(
    `\nJobs table with ${HISTORY} more jobs in the history (posted in ${ms(posting)}):\n` +
      `  first page on screen ${ms(firstPage)} after navigation (warm browser, new context)\n` +
      `  page turn (click to new rows) median ${ms(median(turns))}, max ${ms(Math.max(...turns))} ` +
      `over ${turns.length} turns; target ≤ ${TIME_TARGET_MS} ms: ${verdict(Math.max(...turns), TIME_TARGET_MS)}`,
  );
}

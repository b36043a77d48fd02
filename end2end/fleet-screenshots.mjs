// Makes docs/fleet-light.png and docs/fleet-dark.png: the Fleet page of a real fleet on
// loopback (fleet.mjs: three gpulab nodes, Debian's Prometheus, a hub with
// --prometheus-url), one node stopped so that a node down shows too, in the light and the
// dark colour scheme (the UI follows the browser's `prefers-color-scheme`). Run from
// end2end/ after `cargo xtask ui` and `cargo build -p gpulab-server`:
//
//   GPULAB_BIN=../target/debug/gpulab GPULAB_STATIC_DIR=../dist node fleet-screenshots.mjs

import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { JOB, exerciseJobs, query, startFleet, waitFor } from './fleet.mjs';
import { killed } from './servers.mjs';

const DOCS = fileURLToPath(new URL('../docs/', import.meta.url));
const CHROMIUM = process.env.GPULAB_CHROMIUM ?? '/usr/bin/chromium';

const fleet = await startFleet(3);
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
try {
  await waitFor(
    async () => (await query(fleet.prometheus.url, `up{job="${JOB}"} == 1`)).result.length === 3,
    30_000,
    'Prometheus to scrape the three nodes',
  );
  await Promise.all(fleet.nodes.map((node) => exerciseJobs(node.url)));
  const stopped = fleet.nodes[2];
  await killed(stopped.child, 'SIGTERM');
  await waitFor(
    async () => (await query(fleet.prometheus.url, `up{job="${JOB}",instance="${stopped.instance}"} == 0`)).result.length,
    20_000,
    `Prometheus to see ${stopped.instance} down`,
  );
  for (const colorScheme of ['light', 'dark']) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme });
    const page = await context.newPage();
    await page.goto(`${fleet.hub.url}/fleet`);
    await page.locator('[data-testid="fleet-node"][data-up="false"]').waitFor();
    const file = `${DOCS}fleet-${colorScheme}.png`;
    await page.screenshot({ path: file, fullPage: true });
    console.log(`wrote ${file}`);
    await context.close();
  }
} finally {
  await browser.close();
  await fleet.stop();
}

// Browser tests of the CUDA editor (/editor) against a running server (GPULAB_URL); see
// ui.test.mjs for how they run. Screenshots go to end2end/artifacts/editor-*.png.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BASE_URL, PHONE, api, withPage } from './browser.mjs';

// The editor's bundle, which only the editor page may download.
const EDITOR_BUNDLE = '/codemirror.js';


// The editor's text, line by line, as CodeMirror shows it.
function editorText(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="code-editor"] .cm-line')]
      .map((line) => line.textContent)
      .join('\n'),
  );
}

async function openEditor(page) {
  await page.goto(`${BASE_URL}/editor`);
  await page.locator('[data-testid="code-editor"] .cm-content').waitFor();
}

test('the editor shows a CUDA template with line numbers and highlighting', async () => {
  await withPage('editor', async (page, requests) => {
    await openEditor(page);
    assert.equal(await page.title(), 'CUDA editor · gpulab');
    const editor = page.getByTestId('code-editor');
    assert.equal(await editor.getAttribute('data-state'), 'ready');
    assert.equal(await editor.locator('.cm-lineNumbers').count(), 1, 'a line-number gutter');
    const numbers = await editor.locator('.cm-lineNumbers .cm-gutterElement').allInnerTexts();
    assert.ok(numbers.includes('1') && numbers.includes('5'), `line numbers: ${numbers.join(' ')}`);
    const text = await editorText(page);
    assert.match(text, /extern "C" __global__ void vector_add\(/);
    assert.match(text, /if \(i < n\)/, 'the template checks its bounds');
    // The C/C++ mode colours keywords and types: some spans carry highlight classes.
    assert.ok(
      (await editor.locator('.cm-line span[class]').count()) > 5,
      'the source is highlighted',
    );
    // CUDA's own words are coloured like C's keywords; names the kernel declares are not.
    const colorOf = (word) =>
      page.evaluate((word) => {
        const span = [...document.querySelectorAll('[data-testid="code-editor"] .cm-line span')].find(
          (s) => s.textContent === word,
        );
        return span ? getComputedStyle(span).color : null;
      }, word);
    const keyword = await colorOf('if');
    assert.ok(keyword, 'a keyword is highlighted');
    for (const word of ['__global__', 'threadIdx', 'blockIdx']) {
      assert.equal(await colorOf(word), keyword, `${word} is coloured as a keyword`);
    }
    assert.equal(
      requests.filter((r) => r === `GET ${EDITOR_BUNDLE}`).length,
      1,
      `the editor bundle is loaded once: ${requests.join(', ')}`,
    );

    // Typing goes into the source and the form keeps it.
    await editor.locator('.cm-content').click();
    await page.keyboard.press('Control+End');
    await page.keyboard.type('\n// edited');
    assert.match(await editorText(page), /\/\/ edited$/);
  });
});

test('choosing a template replaces the source and the launch fields', async () => {
  await withPage('editor-templates', async (page) => {
    await openEditor(page);
    const template = page.getByTestId('editor-template');
    await template.selectOption('saxpy');
    await page.waitForFunction(() =>
      document.querySelector('[data-testid="code-editor"] .cm-content')?.textContent.includes('void saxpy('),
    );
    assert.equal(await page.locator('input[name="entry"]').inputValue(), 'saxpy');
    assert.match(
      await page.getByTestId('editor-signature').innerText(),
      /saxpy\(float a, const float \*x, float \*y, unsigned int n\)/,
    );

    await template.selectOption('block_sum');
    await page.waitForFunction(() =>
      document.querySelector('[data-testid="code-editor"] .cm-content')?.textContent.includes('__shared__'),
    );
    assert.equal(await page.locator('input[name="shared_mem_bytes"]').inputValue(), '1024');
    assert.equal(await page.getByTestId('arg-row').count(), 3);

    // A wrong field is marked beside it, and the signature follows the arguments.
    await page.locator('input[name="block-x"]').fill('512');
    await page.locator('input[name="block-y"]').fill('4');
    assert.match(await page.getByTestId('field-error-block').innerText(), /at most 1024/);
    await page.getByRole('button', { name: 'Add a scalar' }).click();
    assert.equal(await page.getByTestId('arg-row').count(), 4);
    assert.match(await page.getByTestId('editor-signature').innerText(), /unsigned int arg4\)$/);

    // A buffer turned scalar shows a value instead of its fill, and the signature follows.
    const first = page.getByTestId('arg-row').first();
    assert.ok(await first.getByLabel('Fill').isVisible());
    await first.getByLabel('Kind').selectOption('scalar');
    assert.ok(await first.getByLabel('Fill').isHidden());
    assert.ok(await first.getByLabel('Value', { exact: true }).isVisible());
    assert.match(await page.getByTestId('editor-signature').innerText(), /block_sum\(float in,/);
    await first.getByRole('button', { name: /^Remove argument 1/ }).click();
    assert.equal(await page.getByTestId('arg-row').count(), 3);

    // An edited source is not thrown away without asking.
    await page.locator('[data-testid="code-editor"] .cm-content').click();
    await page.keyboard.type('// mine');
    page.once('dialog', (dialog) => dialog.dismiss());
    await template.selectOption('vector_add');
    assert.match(await editorText(page), /\/\/ mine/);
    assert.equal(await template.inputValue(), 'block_sum', 'the select goes back');
    page.once('dialog', (dialog) => dialog.accept());
    await template.selectOption('vector_add');
    await page.waitForFunction(() =>
      document.querySelector('[data-testid="code-editor"] .cm-content')?.textContent.includes('void vector_add('),
    );
    assert.doesNotMatch(await editorText(page), /\/\/ mine/);
  });
});

// A host with one GPU, as the server would describe it; the answers are made up in the
// browser, so this runs on any host.
async function pretendThereIsAGpu(page, postAnswer) {
  await page.route('**/api/health', (route) =>
    route.fulfill({
      json: { status: 'ok', version: 'test', cuda: { available: true, driver_version: '12.8', reason: null, libraries: { nvrtc: { found: true, version: '12.8', error: null }, cublas: { found: true, version: '12.8.4', error: null } } } },
    }),
  );
  await page.route('**/api/devices', (route) =>
    route.fulfill({
      json: [
        { id: 'cuda:0', kind: 'cuda', name: 'Test GPU', total_memory_bytes: null, free_memory_bytes: null, cuda: null, cpu: null },
      ],
    }),
  );
  await page.route('**/api/jobs', (route) =>
    route.request().method() === 'POST' ? postAnswer(route) : route.continue(),
  );
}

test('compile errors are marked at their lines and listed below the editor', async () => {
  const log = [
    'compiling kernel.cu failed:',
    'kernel.cu(5): error: identifier "j" is undefined',
    '      if (j < n) {',
    '          ^',
    'kernel.cu(6,9): error: expected a ";"',
    '1 error detected in the compilation of "kernel.cu".',
  ].join('\n');
  let sent;
  await withPage(
    'editor-compile-errors',
    async (page) => {
      await pretendThereIsAGpu(page, (route) => {
        sent = route.request().postDataJSON();
        return route.fulfill({
          status: 422,
          contentType: 'application/problem+json',
          json: { type: 'about:blank', title: 'Unprocessable Entity', status: 422, detail: log, field: 'params.source' },
        });
      });
      await openEditor(page);
      assert.equal(await page.getByTestId('editor-needs-gpu').count(), 0);
      const run = page.getByTestId('editor-run');
      await page.waitForFunction(() => !document.querySelector('[data-testid="editor-run"]').disabled);
      await run.click();

      const list = page.getByTestId('compile-errors');
      await list.waitFor();
      assert.match(await list.innerText(), /2 errors/);
      assert.match(await list.innerText(), /Line 5: identifier "j" is undefined/);
      assert.match(await list.innerText(), /Line 6, column 9: expected a ";"/);
      // The editor marks both lines in its gutter and underlines the code.
      const editor = page.getByTestId('code-editor');
      await editor.locator('.cm-lint-marker-error').first().waitFor();
      assert.equal(await editor.locator('.cm-lint-marker-error').count(), 2);
      assert.ok((await editor.locator('.cm-lintRange-error').count()) >= 2);

      // What was sent: the request shape of a custom kernel.
      assert.equal(sent.kernel, 'custom');
      assert.equal(sent.device, 'cuda:0');
      assert.equal(sent.params.entry, 'vector_add');
      assert.equal(sent.params.grid, null);
      assert.deepEqual(sent.params.block, [256, 1, 1]);
      assert.match(sent.params.source, /__global__ void vector_add/);
      assert.deepEqual(sent.params.args.map((a) => a.kind), ['buffer', 'buffer', 'buffer', 'scalar']);
      assert.deepEqual(sent.params.args[3], { kind: 'scalar', type: 'u32', value: 1048576 });
    },
    { expectedErrors: [/status of 422/] },
  );
});

test('the server refusing the custom kernel shows its problem', async () => {
  await withPage(
    'editor-refused',
    async (page) => {
      await pretendThereIsAGpu(page, (route) => route.continue());
      await openEditor(page);
      await page.waitForFunction(() => !document.querySelector('[data-testid="editor-run"]').disabled);
      await page.getByTestId('editor-run').click();
      // Today's server has no custom kernel (and no cuda:0 here): its problem is shown.
      const alert = page.locator('.notice.error[role="alert"]').last();
      await alert.waitFor();
      assert.match(await alert.innerText(), /custom|cuda:0/);
    },
    { expectedErrors: [/status of 4\d\d/] },
  );
});

test('on a host without a GPU the editor says so and Run is off', async () => {
  const health = await api('/api/health');
  const devices = await api('/api/devices');
  const hasGpu = health.cuda.available && devices.some((d) => d.kind === 'cuda');
  await withPage('editor-needs-gpu', async (page, requests) => {
    await openEditor(page);
    const run = page.getByTestId('editor-run');
    if (hasGpu) {
      assert.equal(await page.getByTestId('editor-needs-gpu').count(), 0);
      assert.ok(await run.isEnabled());
      return;
    }
    const notice = page.getByTestId('editor-needs-gpu');
    await notice.waitFor();
    const text = await notice.innerText();
    assert.match(text, /Custom CUDA kernels need a GPU/);
    assert.ok(text.includes(health.cuda.reason), `the server's reason: ${text}`);
    assert.match(text, /--gpus all/);
    assert.ok(await run.isDisabled(), 'Run is disabled');
    await run.click({ force: true });
    await page.waitForTimeout(300);
    assert.ok(!requests.includes('POST /api/jobs'), 'nothing was sent');
    // The editor itself still works.
    await page.locator('[data-testid="code-editor"] .cm-content').click();
    await page.keyboard.type('// still editable');
    assert.match(await editorText(page), /still editable/);
  });
});

test('other pages do not download the editor', async () => {
  await withPage('editor-not-elsewhere', async (page, requests) => {
    for (const path of ['/', '/launch', '/compare']) {
      await page.goto(`${BASE_URL}${path}`);
      await page.waitForLoadState('networkidle');
    }
    assert.ok(!requests.includes(`GET ${EDITOR_BUNDLE}`), `requests: ${requests.join(', ')}`);
    // Following the header's link loads it on demand.
    await page.getByRole('link', { name: 'Editor', exact: true }).click();
    await page.locator('[data-testid="code-editor"] .cm-lineNumbers').waitFor();
    assert.ok(requests.includes(`GET ${EDITOR_BUNDLE}`));
  });
});

test('the editor reads well in the dark and on a phone', async () => {
  await withPage(
    'editor-dark',
    async (page) => {
      await openEditor(page);
      const colors = await page.evaluate(() => {
        const editor = document.querySelector('[data-testid="code-editor"] .cm-editor');
        return { background: getComputedStyle(editor).backgroundColor, text: getComputedStyle(editor).color };
      });
      assert.notEqual(colors.background, 'rgb(255, 255, 255)', 'a dark background');
      assert.match(colors.text, /rgb\(2[0-9]{2}, 2[0-9]{2}, 2[0-9]{2}\)/, 'light text');
    },
    { context: { colorScheme: 'dark' } },
  );
  await withPage(
    'editor-phone',
    async (page) => {
      await openEditor(page);
      const overflow = await page.evaluate(
        () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
      );
      assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
    },
    { context: { viewport: PHONE } },
  );
});

// Bundles editor.js and the CodeMirror packages it imports into ../vendor/codemirror.js:
// one minified ES module, which the editor page imports when it opens. `cargo xtask ui`
// runs this after `npm ci`.
//
// The C++ mode lives in @codemirror/legacy-modes' clike.js beside a dozen other languages
// (Java, C#, Scala, Kotlin, …), each made by a top-level call that esbuild must keep, as it
// cannot know the call has no side effects. Marking those calls pure lets it drop every
// language but the one imported: about 13 KB less to download.

import { readFile } from 'node:fs/promises';

import { build } from 'esbuild';

const onlyTheImportedLanguages = {
  name: 'pure-clike-languages',
  setup(esbuild) {
    esbuild.onLoad({ filter: /legacy-modes[\\/]mode[\\/]clike\.js$/ }, async ({ path }) => {
      const source = await readFile(path, 'utf8');
      // `clike({…})` and `words("…")` build a language from plain data.
      const contents = source.replace(/(?<![\w.$]|function )\b(clike|words)\(/g, '/* @__PURE__ */ $1(');
      return { contents, loader: 'js' };
    });
  },
};

await build({
  entryPoints: ['editor.js'],
  bundle: true,
  format: 'esm',
  minify: true,
  outfile: '../vendor/codemirror.js',
  plugins: [onlyTheImportedLanguages],
  logLevel: 'info',
});

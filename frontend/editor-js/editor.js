// The code editor of gpulab's CUDA page: CodeMirror 6 with C/C++ highlighting (which reads
// CUDA C well), line numbers and inline error markers. The highlighting is the C++ mode of
// @codemirror/legacy-modes (a stream tokenizer, about a tenth of the size of the Lezer C++
// grammar of @codemirror/lang-cpp), with CUDA's built-in variables added. `cargo xtask ui` bundles this file
// into frontend/vendor/codemirror.js, which the editor page imports when it is opened, so
// no other page downloads it.
//
// The page (Rust) sees only the small API below: `create` and the handle it returns.

import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import {
  bracketMatching,
  HighlightStyle,
  indentOnInput,
  indentUnit,
  StreamLanguage,
  syntaxHighlighting,
} from '@codemirror/language';
import { cpp } from '@codemirror/legacy-modes/mode/clike';
import { lintGutter, setDiagnostics } from '@codemirror/lint';
import { EditorState } from '@codemirror/state';
import {
  drawSelection,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
} from '@codemirror/view';
import { tags } from '@lezer/highlight';

// C++ as the legacy mode reads it (`__global__`, `__shared__`, `__syncthreads` are already
// built-ins there: names that start with `__` are the compiler's), plus the variables CUDA
// gives every kernel.
const cudaBuiltins = new Set(['threadIdx', 'blockIdx', 'blockDim', 'gridDim', 'warpSize']);
const cuda = StreamLanguage.define({
  ...cpp,
  name: 'cuda',
  token(stream, state) {
    const style = cpp.token(stream, state);
    return style === 'variable' && cudaBuiltins.has(stream.current()) ? 'builtin' : style;
  },
});

// Colours are the page's CSS variables (style.css), so the editor follows its light and
// dark schemes without a second theme.
const highlightStyle = HighlightStyle.define([
  // The legacy mode's `builtin`: `__global__`, `__shared__`, `threadIdx`, `__syncthreads`.
  {
    tag: [tags.keyword, tags.controlKeyword, tags.modifier, tags.operatorKeyword, tags.standard(tags.variableName)],
    color: 'var(--code-keyword)',
  },
  { tag: [tags.typeName, tags.standard(tags.typeName)], color: 'var(--code-type)' },
  { tag: [tags.string, tags.character], color: 'var(--code-string)' },
  { tag: [tags.number, tags.bool, tags.null, tags.atom], color: 'var(--code-number)' },
  { tag: [tags.comment, tags.lineComment, tags.blockComment], color: 'var(--code-comment)', fontStyle: 'italic' },
  { tag: [tags.meta, tags.processingInstruction, tags.macroName], color: 'var(--code-macro)' },
  // The name a declaration introduces, such as the kernel's.
  { tag: tags.definition(tags.variableName), color: 'var(--code-function)' },
]);

const theme = EditorView.theme({
  '&': {
    color: 'var(--text)',
    backgroundColor: 'var(--surface)',
    fontSize: '0.9rem',
  },
  '.cm-scroller': { fontFamily: 'var(--mono)', lineHeight: '1.5' },
  '.cm-content': { caretColor: 'var(--text)' },
  '.cm-cursor, .cm-dropCursor': { borderLeftColor: 'var(--text)' },
  '&.cm-focused .cm-selectionBackground, .cm-selectionBackground, .cm-content ::selection': {
    backgroundColor: 'var(--code-selection)',
  },
  '.cm-gutters': {
    backgroundColor: 'var(--bg)',
    color: 'var(--muted)',
    borderRight: '1px solid var(--border)',
  },
  '.cm-activeLine': { backgroundColor: 'var(--code-active-line)' },
  '.cm-activeLineGutter': { backgroundColor: 'var(--code-active-line)', color: 'var(--text)' },
  '&.cm-focused .cm-matchingBracket': { backgroundColor: 'var(--code-selection)' },
  '.cm-tooltip': {
    backgroundColor: 'var(--surface)',
    color: 'var(--text)',
    border: '1px solid var(--border)',
  },
});

// A line of the document, clamped into it: a compiler may name a line past the end.
function lineAt(doc, number) {
  return doc.line(Math.min(Math.max(1, number), doc.lines));
}

// CodeMirror diagnostics from `{line, column?, message, severity?}` (1-based line and column):
// from the column to the end of the line, else the whole line.
function toDiagnostics(doc, list) {
  return list.map(({ line, column, message, severity }) => {
    const at = lineAt(doc, line);
    const from = column ? Math.min(at.from + column - 1, at.to) : at.from;
    return {
      from,
      to: Math.max(from, at.to),
      severity: severity === 'warning' ? 'warning' : 'error',
      message,
    };
  });
}

/**
 * An editor in `parent`, holding `doc`; `onChange(text)` hears every edit.
 * Returns {getValue(), setValue(text), setDiagnostics(list), destroy()}.
 */
export function create(parent, doc, onChange) {
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightSpecialChars(),
        history(),
        drawSelection(),
        indentOnInput(),
        indentUnit.of('    '),
        bracketMatching(),
        highlightActiveLine(),
        cuda,
        syntaxHighlighting(highlightStyle),
        lintGutter(),
        keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
        theme,
        EditorView.contentAttributes.of({ 'aria-label': 'CUDA C source' }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) onChange(update.state.doc.toString());
        }),
      ],
    }),
  });
  return {
    getValue: () => view.state.doc.toString(),
    setValue(text) {
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: text },
        selection: { anchor: 0 },
      });
    },
    setDiagnostics(list) {
      view.dispatch(setDiagnostics(view.state, toDiagnostics(view.state.doc, list)));
    },
    destroy: () => view.destroy(),
  };
}

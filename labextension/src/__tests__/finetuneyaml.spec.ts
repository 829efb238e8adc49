// The language switch of %%finetune cells on a real CodeMirror state (no view, no DOM): the cell's own
// language stands in for the lab's Python, the lab's YAML is the legacy-mode one it registers.
import { StreamLanguage, language } from '@codemirror/language';
import { yaml as yamlMode } from '@codemirror/legacy-modes/mode/yaml';
import { EditorState, Transaction } from '@codemirror/state';

import { finetuneExtension } from '../finetuneyaml';

const YAML = StreamLanguage.define(yamlMode);
const PYTHON = StreamLanguage.define({ name: 'python-ish', token: stream => (stream.skipToEnd(), null) });

function editor(doc = ''): EditorState {
  return EditorState.create({ doc, extensions: [PYTHON, finetuneExtension(YAML, () => null)] });
}

function type(state: EditorState, insert: string, from = 0, to = from): EditorState {
  return state.update({ changes: { from, to, insert }, annotations: Transaction.userEvent.of('input') }).state;
}

describe('%%finetune language switch', () => {
  it('keeps the cell language for ordinary cells', () => {
    const state = type(editor(), 'x = 1\nprint(x)');
    expect(state.facet(language)).toBe(PYTHON);
  });

  it('switches to YAML when the magic is typed and back when it is removed', () => {
    let state = type(editor(), 'model:\n  name: x');
    expect(state.facet(language)).toBe(PYTHON);
    state = type(state, '%%finetune\n');
    expect(state.facet(language)).toBe(YAML);
    state = type(state, 'training:\n  max_steps: 3\n', state.doc.length); // edits below keep YAML
    expect(state.facet(language)).toBe(YAML);
    state = type(state, '', 0, '%%finetune\n'.length);
    expect(state.facet(language)).toBe(PYTHON);
  });

  it('does not switch for a look-alike magic', () => {
    expect(type(editor(), '%%finetuned\nmodel: x').facet(language)).toBe(PYTHON);
    expect(type(editor(), '# %%finetune\nmodel: x').facet(language)).toBe(PYTHON);
  });
});

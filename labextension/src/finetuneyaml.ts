/**
 * CodeMirror 6 extension for ``%%finetune`` cells: while the first line of a cell is the magic, the
 * cell's language is YAML (the lab's own YAML mode, from the language registry) instead of Python, and
 * keys the config does not know are underlined with a hover hint ("did you mean ...").
 *
 * Every other cell keeps the lab's language (see finetuneExtension for how the switch works).
 */
import { Language, languageDataProp, syntaxHighlighting } from '@codemirror/language';
import { Compartment, EditorState, Extension, Prec, RangeSetBuilder } from '@codemirror/state';
import { Decoration, DecorationSet, EditorView, ViewPlugin, ViewUpdate } from '@codemirror/view';
import { Highlighter, classHighlighter } from '@lezer/highlight';

import { ISchema, findUnknownKeys, isFinetuneCell } from './model';

/** The first line of the document, cheaply. */
function firstLine(view: { state: { doc: { line(n: number): { text: string } } } }): string {
  return view.state.doc.line(1).text;
}

/** Decorations marking unknown config keys of a %%finetune cell. */
function unknownKeyMarks(view: EditorView, schema: ISchema): DecorationSet {
  const builder = new RangeSetBuilder<Decoration>();
  if (!isFinetuneCell(firstLine(view))) {
    return builder.finish();
  }
  const text = view.state.doc.toString();
  for (const p of findUnknownKeys(text, schema)) {
    builder.add(
      p.from,
      p.to,
      Decoration.mark({
        class: 'jft-unknown-key',
        attributes: { title: `jupyter-ft: ${p.message}`, 'data-jft-path': p.path }
      })
    );
  }
  return builder.finish();
}

function unknownKeysPlugin(getSchema: () => ISchema | null): Extension {
  return ViewPlugin.fromClass(
    class {
      decorations: DecorationSet;
      constructor(view: EditorView) {
        const schema = getSchema();
        this.decorations = schema ? unknownKeyMarks(view, schema) : Decoration.none;
      }
      update(update: ViewUpdate) {
        if (update.docChanged) {
          const schema = getSchema();
          this.decorations = schema ? unknownKeyMarks(update.view, schema) : Decoration.none;
        }
      }
    },
    { decorations: v => v.decorations }
  );
}

/**
 * Stable ``tok-<tag>`` classes (``tok-atom`` for a key, ``tok-number``...) on YAML trees only, next to the
 * theme's own colours: themes and tests can address the tokens of a %%finetune body by name.
 */
function yamlTokenClasses(yaml: Language): Extension {
  const scoped: Highlighter = {
    style: classHighlighter.style,
    scope: type => type.prop(languageDataProp) === yaml.data
  };
  return syntaxHighlighting(scoped);
}

/**
 * The extension: YAML for %%finetune cells (``yaml`` is the lab's YAML language, already loaded), a
 * ``jft-finetune-cell`` class on their editor, and the unknown-key hints once the schema is known.
 *
 * The YAML language sits in a compartment, filled while the first line is the magic: at the highest
 * precedence its value of CodeMirror's ``language`` facet comes first and wins over the cell's Python, and
 * the parse restarts whenever the facet changes, so typing or deleting the magic switches at once. A
 * transaction extender keeps the compartment in step with the first line; a view plugin fills it for a
 * cell that already starts with the magic when its editor is created.
 */
export function finetuneExtension(yaml: Language, getSchema: () => ISchema | null): Extension {
  const mode = new Compartment();
  const yamlOn = Prec.highest(yaml.extension);
  const isOn = (state: EditorState) => mode.get(state) === yamlOn;
  const wanted = (state: EditorState) => isFinetuneCell(state.doc.line(1).text);
  const follow = EditorState.transactionExtender.of(tr => {
    if (!tr.docChanged) {
      return null;
    }
    const want = isFinetuneCell(tr.newDoc.line(1).text);
    return want === isOn(tr.startState) ? null : { effects: mode.reconfigure(want ? yamlOn : []) };
  });
  const initial = ViewPlugin.define(view => {
    if (wanted(view.state) && !isOn(view.state)) {
      // not from inside the view's construction: right after it
      Promise.resolve().then(() => {
        if (wanted(view.state) && !isOn(view.state)) {
          view.dispatch({ effects: mode.reconfigure(yamlOn) });
        }
      }).catch(() => undefined);
    }
    return {};
  });
  return [
    mode.of([]),
    follow,
    initial,
    EditorView.editorAttributes.compute(['doc'], state =>
      wanted(state) ? { class: 'jft-finetune-cell' } : ({} as { [name: string]: string })
    ),
    yamlTokenClasses(yaml),
    unknownKeysPlugin(getSchema)
  ];
}

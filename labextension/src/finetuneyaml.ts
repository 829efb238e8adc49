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

import { IKeyProblem, ISchema, isFinetuneCell, suggest } from './model';

// --------------------------------------------------------------------------- the config's key tree

/** What a ``sweep:`` block accepts (``jupyter_ft/config/sweep_plan.py``), as ``GET jupyter-ft/api/schema`` sends it. */
export interface ISweepSchema {
  /** the block's own keys: method, n, seed, params */
  reserved: string[];
  methods?: string[];
  /** ``uniform``, ``log_uniform``, ``int_uniform``: the one key of a random sweep's range */
  distributions: string[];
  /** every dotted ``section.field`` that can be swept */
  sweepable: string[];
}

/** The served schema with the parts only the nested hints use: ``sweep``, and ``keys`` on a field whose
 * mapping has a fixed set of keys (``data.columns``: its roles). An older server without them still works:
 * its sweep blocks and column roles go unchecked. */
export interface IFinetuneSchema extends ISchema {
  sweep?: ISweepSchema;
}

/** A mapping key of the body, from block lines or from a flow mapping (``{root: runs}``). */
interface IKeyNode {
  key: string;
  /** offsets of the key's own text (quotes excluded) */
  from: number;
  to: number;
  /** a mapping (block lines below it, or a ``{...}`` value): its entries are ``children`` */
  isMap: boolean;
  children: IKeyNode[];
}

const MAGIC_LINE = /^%%finetune(\s|$)/;
// a block key: plain (``learning_rate``, a dotted sweep key, words with spaces) or quoted
const BLOCK_KEY = /^(?:"([^"\\]*)"|'([^']*)'|([A-Za-z_][\w.-]*(?:[ \t]+[\w.-]+)*))[ \t]*:(?=\s|$)/;
const BLOCK_SCALAR = /^[|>][-+0-9]*\s*(#.*)?$/;
const PLAIN_NAME = /^[A-Za-z_]\w*$/;
// a value's anchor or tag in front of it (``training: &base``), which still lets block lines follow
const PROPERTIES = /^(?:(?:&[^\s]+|![^\s]*)[ \t]+)*(?:&[^\s]+|![^\s]*)?/;

/** The end (exclusive) of a quoted scalar starting at ``pos``; the text's end when it is not closed. */
function quotedEnd(text: string, pos: number): number {
  const q = text[pos];
  for (let i = pos + 1; i < text.length; i++) {
    if (q === '"' && text[i] === '\\') {
      i++;
    } else if (text[i] === q) {
      if (q === "'" && text[i + 1] === "'") {
        i++; // '' is a quote inside single quotes
      } else {
        return i + 1;
      }
    }
  }
  return text.length;
}

function skipSpace(text: string, i: number): number {
  for (;;) {
    while (i < text.length && /\s/.test(text[i])) {
      i++;
    }
    if (text[i] === '#' && (i === 0 || /\s/.test(text[i - 1]))) {
      while (i < text.length && text[i] !== '\n') {
        i++;
      }
      continue;
    }
    return i;
  }
}

/**
 * A flow collection starting at ``pos`` (``{`` or ``[``), maybe over several lines: its end and, for a
 * mapping, the entries that have a ``key: value`` form. An entry without a colon is not a key: ``{lr}``
 * is the magic's ``{var}`` expansion (the whole mapping is then a plain value, ``isVar``). Unclosed
 * brackets run to the end of the text (YAML would reject the body anyway).
 */
function parseFlow(text: string, pos: number): { end: number; children: IKeyNode[]; isVar: boolean } {
  const close = text[pos] === '{' ? '}' : ']';
  const children: IKeyNode[] = [];
  const colonless: string[] = [];
  let entries = 0;
  let i = pos + 1;
  for (;;) {
    i = skipSpace(text, i);
    if (i >= text.length || text[i] === close) {
      return {
        end: Math.min(i + 1, text.length),
        children,
        isVar: close === '}' && entries === 1 && colonless.length === 1 && PLAIN_NAME.test(colonless[0])
      };
    }
    if (text[i] === ',') {
      i++;
      continue;
    }
    entries++;
    // an entry: a key (quoted, plain, or a collection: a sequence's item), then maybe ': value'
    let keyFrom = i;
    let keyTo = i;
    let collection = false;
    if (text[i] === '"' || text[i] === "'") {
      const end = quotedEnd(text, i);
      keyFrom = i + 1;
      keyTo = Math.max(keyFrom, end - 1);
      i = end;
    } else if (text[i] === '{' || text[i] === '[') {
      i = parseFlow(text, i).end;
      collection = true;
    } else {
      while (i < text.length && !',{}[]\n'.includes(text[i]) && !(text[i] === ':' && /[\s,{}[\]]/.test(text[i + 1] || ' '))) {
        i++;
      }
      if (i === keyFrom) {
        i++; // a stray closing bracket of the other kind: YAML rejects it, step over it
        continue;
      }
      for (keyTo = i; keyTo > keyFrom && /\s/.test(text[keyTo - 1]); keyTo--) {
        // trailing blanks are not part of the key
      }
    }
    i = skipSpace(text, i);
    if (text[i] !== ':') {
      if (!collection) {
        colonless.push(text.slice(keyFrom, keyTo));
      }
      continue;
    }
    const node: IKeyNode = { key: text.slice(keyFrom, keyTo), from: keyFrom, to: keyTo, isMap: false, children: [] };
    i = skipSpace(text, i + 1);
    if (text[i] === '{' || text[i] === '[') {
      const value = parseFlow(text, i);
      node.isMap = text[i] === '{' && !value.isVar;
      node.children = node.isMap ? value.children : [];
      i = value.end;
    } else if (text[i] === '"' || text[i] === "'") {
      i = quotedEnd(text, i);
    } else {
      while (i < text.length && !`,${close}\n`.includes(text[i])) {
        i++;
      }
      i = text[i] === '\n' ? i + 1 : i;
    }
    if (close === '}' && !collection) {
      children.push(node);
    }
  }
}

/**
 * The mapping keys of a ``%%finetune`` body as a tree, by indentation (any width: 2, 4...). Lines that
 * cannot hold a config key are passed over: comments, blank lines, list items (``- q_proj``, with what is
 * indented under them), block scalars (``system_prompt: |``), the rest of a multi-line flow collection
 * or quoted scalar. A ``{...}`` value is read as a mapping unless it is a ``{var}`` expansion.
 */
function keyTree(text: string): IKeyNode[] {
  const root: IKeyNode = { key: '', from: 0, to: 0, isMap: true, children: [] };
  // open block nodes; null: a node whose lines are not config keys (a list item, a scalar's continuation)
  const stack: { indent: number; node: IKeyNode | null }[] = [{ indent: -1, node: root }];
  let skipTo = 0; // the end of a multi-line flow collection or quoted scalar
  let blockIndent: number | null = null; // inside a block scalar whose key sits at this indent
  let start = 0;
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    const lineStart = start;
    start += line.length + 1;
    if ((i === 0 && MAGIC_LINE.test(line)) || lineStart < skipTo) {
      return;
    }
    const body = line.trimStart();
    const indent = line.length - body.length;
    if (body === '' || body.startsWith('#')) {
      return;
    }
    if (blockIndent !== null) {
      if (indent > blockIndent) {
        return;
      }
      blockIndent = null;
    }
    if (body === '---' || body === '...' || body.startsWith('%')) {
      return;
    }
    while (stack.length > 1 && stack[stack.length - 1].indent >= indent) {
      stack.pop();
    }
    const parent = stack[stack.length - 1].node;
    let valueAt: number; // offset of the value in the line
    let node: IKeyNode | null = null;
    if (body === '-' || body.startsWith('- ')) {
      valueAt = indent + 1;
    } else {
      const m = BLOCK_KEY.exec(body);
      if (!m) {
        return; // a scalar's continuation, a complex key, a stray token
      }
      const quoted = m[1] !== undefined || m[2] !== undefined;
      const key = m[1] ?? m[2] ?? m[3];
      const from = lineStart + indent + (quoted ? 1 : 0);
      node = { key, from, to: from + key.length, isMap: false, children: [] };
      valueAt = indent + m[0].length;
    }
    // the value: what follows the key (or the dash) on this line, without properties and comment
    let at = valueAt;
    while (at < line.length && (line[at] === ' ' || line[at] === '\t')) {
      at++;
    }
    const props = PROPERTIES.exec(line.slice(at));
    at += props ? props[0].length : 0;
    while (at < line.length && (line[at] === ' ' || line[at] === '\t')) {
      at++;
    }
    const value = line.slice(at);
    const bare = value === '' || value.startsWith('#');
    let opensBlock = false;
    if (value.startsWith('{') || value.startsWith('[')) {
      const flow = parseFlow(text, lineStart + at);
      skipTo = flow.end;
      if (node && value.startsWith('{') && !flow.isVar) {
        node.isMap = true;
        node.children = flow.children;
      }
    } else if (value.startsWith('"') || value.startsWith("'")) {
      skipTo = quotedEnd(text, lineStart + at);
    } else if (BLOCK_SCALAR.test(value)) {
      blockIndent = indent;
    } else if (node && bare) {
      node.isMap = true; // its entries, if any, are the lines indented below it
      opensBlock = true;
    }
    if (node && parent) {
      parent.children.push(node);
    }
    stack.push({ indent, node: node && parent && opensBlock ? node : null });
  });
  return root.children;
}

// --------------------------------------------------------------------------- checking the tree

/** ``'a:'``, ``'a:' or 'b:'``, ``'a:', 'b:' or 'c:'`` */
function orList(names: string[], suffix = ''): string {
  const quoted = names.map(n => `'${n}${suffix}'`);
  return quoted.length < 2 ? quoted.join('') : `${quoted.slice(0, -1).join(', ')} or ${quoted[quoted.length - 1]}`;
}

/** The close name, else one that is a prefix of the other (``rank`` for ``r``, as ``sweep.py`` does). */
function closeName(key: string, known: string[]): string | null {
  return suggest(key, known) ?? (known.find(k => k && key && (key.startsWith(k) || k.startsWith(key))) || null);
}

function fieldsOf(schema: ISchema, section: string): string[] {
  return Object.keys((schema.sections[section] || { fields: {} }).fields || {});
}

/**
 * The problems of a ``%%finetune`` body's keys, in document order: a top-level key that is neither a
 * section nor ``sweep``; a key under a section that is not one of its fields, with a did-you-mean from
 * that section's fields, or where it belongs when it is another section's field (``epochs`` under
 * ``lora``); a role of ``data.columns`` it does not know; in a ``sweep:`` block, a dotted key that cannot
 * be swept or a distribution that does not exist. Mirrors the "unknown key" problems that
 * ``FineTuneConfig.from_dict`` and ``sweep.parse_sweep`` raise at launch, so the editor shows them first.
 */
export function findConfigProblems(text: string, schema: IFinetuneSchema): IKeyProblem[] {
  const problems: IKeyProblem[] = [];
  const sections = schema.sections || {};
  const sectionNames = Object.keys(sections);
  const owners = new Map<string, string[]>(); // field -> the sections that have it
  for (const s of sectionNames) {
    for (const f of fieldsOf(schema, s)) {
      owners.set(f, [...(owners.get(f) || []), s]);
    }
  }
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\n') {
      lineStarts.push(i + 1);
    }
  }
  const lineOf = (offset: number) => {
    let lo = 0;
    let hi = lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid] <= offset) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    return lo;
  };
  const flag = (node: IKeyNode, path: string, message: string) => {
    if (node.to <= node.from) {
      return; // an empty key ({: x}): nothing to underline
    }
    problems.push({ from: node.from, to: node.to, line: lineOf(node.from), key: node.key, path, message });
  };

  const checkFields = (section: string, node: IKeyNode) => {
    const fields = fieldsOf(schema, section);
    for (const child of node.children) {
      const path = `${section}.${child.key}`;
      if (fields.includes(child.key)) {
        const keys = (sections[section].fields[child.key] as { keys?: string[] }).keys;
        if (keys && child.isMap) {
          checkKeys(path, keys, child);
        }
        continue;
      }
      const elsewhere = owners.get(child.key);
      const hint = suggest(child.key, fields);
      let message = `unknown key '${child.key}' in ${section}. `;
      if (elsewhere && !hint) {
        message += `'${child.key}' belongs under ${orList(elsewhere, ':')}`;
      } else if (hint) {
        message += `Did you mean '${hint}'?` + (elsewhere ? ` ('${child.key}' itself belongs under ${orList(elsewhere, ':')})` : '');
      } else {
        const close = closeName(child.key, fields);
        message += close ? `Did you mean '${close}'?` : `Known keys: ${fields.join(', ')}`;
      }
      flag(child, path, message);
    }
  };

  const checkKeys = (path: string, keys: string[], node: IKeyNode) => {
    for (const child of node.children) {
      if (!keys.includes(child.key)) {
        const hint = suggest(child.key, keys);
        flag(child, `${path}.${child.key}`, `unknown key '${child.key}' in ${path}. ` + (hint ? `Did you mean '${hint}'?` : `Known keys: ${keys.join(', ')}`));
      }
    }
  };

  const checkSweep = (sweep: ISweepSchema, node: IKeyNode) => {
    const params = node.children.find(c => c.key === 'params');
    for (const child of node.children) {
      if (sweep.reserved.includes(child.key)) {
        continue;
      }
      if (params) {
        flag(child, `sweep.${child.key}`, `'${child.key}' belongs under sweep.params when params is given`);
      } else {
        checkParam(sweep, child, '', 'sweep');
      }
    }
    if (params) {
      for (const child of params.children) {
        checkParam(sweep, child, '', 'sweep.params');
      }
    }
  };

  // a swept key: dotted (``training.learning_rate``) or nested (``training:`` then ``learning_rate:``)
  const checkParam = (sweep: ISweepSchema, node: IKeyNode, prefix: string, at: string) => {
    const name = prefix + node.key;
    const path = `${at}.${node.key}`;
    const parts = name.split('.');
    const isMap = node.isMap && node.children.length > 0; // not a bare key with its list below it
    if (sweep.sweepable.includes(name)) {
      if (isMap) {
        // a range of a random sweep: {log_uniform: [1e-5, 1e-3]}
        for (const child of node.children) {
          if (!sweep.distributions.includes(child.key)) {
            const hint = suggest(child.key, sweep.distributions);
            flag(child, `${path}.${child.key}`, `unknown distribution '${child.key}' for ${name}. ` + (hint ? `Did you mean '${hint}'?` : `Distributions: ${sweep.distributions.join(', ')}`));
          }
        }
      }
      return;
    }
    if (parts.length === 1 && sectionNames.includes(name)) {
      // its fields below it; none while it is being typed, or when it is a $var/{var} of a mapping
      for (const child of node.children) {
        checkParam(sweep, child, `${name}.`, path);
      }
      return;
    }
    const sweptSections = sectionNames.filter(s => sweep.sweepable.some(k => k.startsWith(`${s}.`)));
    let message: string;
    if (sectionNames.includes(parts[0]) && !sweptSections.includes(parts[0])) {
      message = `${parts[0]}.* cannot be swept: the runs of a sweep share one ${parts[0]} section`;
    } else if (parts.length === 1 && isMap) {
      const hint = suggest(name, sweptSections);
      message = `unknown section '${name}' in sweep. ` + (hint ? `Did you mean '${hint}'?` : `Sections: ${sweptSections.join(', ')}`);
    } else if (parts.length === 1 && owners.has(name)) {
      const keys = (owners.get(name) || []).filter(s => sweptSections.includes(s)).map(s => `${s}.${name}`);
      message = `sweep keys are dotted config keys: did you mean ${orList(keys)}?`;
    } else {
      const section = sectionNames.includes(parts[0]) ? parts[0] : suggest(parts[0], sweptSections);
      const field = parts.slice(1).join('.');
      let hint: string | null = null;
      if (section && parts.length > 1) {
        const fields = fieldsOf(schema, section);
        const close = fields.includes(field) ? field : closeName(field, fields);
        if (close) {
          hint = `${section}.${close}`;
        } else if (owners.has(field)) {
          hint = `${(owners.get(field) || [])[0]}.${field}`;
        }
      }
      message = `unknown sweep key '${name}'. ` + (hint && sweep.sweepable.includes(hint) ? `Did you mean '${hint}'?` : 'Use a dotted config key such as training.learning_rate');
    }
    flag(node, path, message);
  };

  for (const node of keyTree(text)) {
    if (sectionNames.includes(node.key)) { // not `in`: a key such as `constructor` is no section
      if (node.isMap) {
        checkFields(node.key, node);
      }
      continue;
    }
    if (node.key === 'sweep') {
      if (schema.sweep && node.isMap) {
        checkSweep(schema.sweep, node);
      }
      continue;
    }
    const [head, ...rest] = node.key.split('.');
    const known = [...sectionNames, 'sweep'];
    let message = `unknown section '${node.key}'. `;
    if (rest.length && sectionNames.includes(head)) {
      message += `Dotted keys are for sweep: only; write '${head}:' with '${rest.join('.')}:' indented under it`;
    } else if (owners.has(node.key)) {
      message += `'${node.key}' belongs under ${orList(owners.get(node.key) || [], ':')}`;
    } else {
      const hint = suggest(node.key, known);
      message += hint ? `Did you mean '${hint}'?` : `Sections: ${known.join(', ')}`;
    }
    flag(node, node.key, message);
  }
  return problems.sort((a, b) => a.from - b.from || a.to - b.to);
}

// --------------------------------------------------------------------------- the editor

/** Decorations marking the key problems of a %%finetune cell, the message as the hover title. */
export function configHintMarks(state: EditorState, schema: IFinetuneSchema): DecorationSet {
  const builder = new RangeSetBuilder<Decoration>();
  if (!isFinetuneCell(state.doc.line(1).text)) {
    return builder.finish();
  }
  for (const p of findConfigProblems(state.doc.toString(), schema)) {
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

function unknownKeysPlugin(getSchema: () => IFinetuneSchema | null): Extension {
  const marks = (view: EditorView) => {
    const schema = getSchema();
    return schema ? configHintMarks(view.state, schema) : Decoration.none;
  };
  return ViewPlugin.fromClass(
    class {
      decorations: DecorationSet;
      constructor(view: EditorView) {
        this.decorations = marks(view);
      }
      update(update: ViewUpdate) {
        if (update.docChanged) {
          this.decorations = marks(update.view);
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
export function finetuneExtension(yaml: Language, getSchema: () => IFinetuneSchema | null): Extension {
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

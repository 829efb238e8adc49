// The language switch of %%finetune cells on a real CodeMirror state (no view, no DOM): the cell's own
// language stands in for the lab's Python, the lab's YAML is the legacy-mode one it registers.
import { StreamLanguage, language } from '@codemirror/language';
import { yaml as yamlMode } from '@codemirror/legacy-modes/mode/yaml';
import { EditorState, Transaction } from '@codemirror/state';

import { IFinetuneSchema, configHintMarks, finetuneExtension, findConfigProblems } from '../finetuneyaml';

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

// ------------------------------------------------------------------------------------------------------
// Key hints: the schema below has the shape GET jupyter-ft/api/schema answers (jupyter_ft/server/handlers.py
// config_schema; tests/test_server.py checks the real one carries the parts used here), with a subset of
// the fields.

const SCHEMA: IFinetuneSchema = {
  sections: {
    model: { fields: { name: {}, revision: {}, trust_remote_code: {} } },
    data: {
      fields: {
        source: {},
        format: {},
        columns: { keys: ['instruction', 'input', 'output', 'messages', 'prompt', 'completion', 'text'] } as {},
        max_length: {},
        system_prompt: {}
      }
    },
    lora: { fields: { r: {}, alpha: {}, dropout: {}, target_modules: {} } },
    quantization: { fields: { method: {}, double_quant: {} } },
    training: {
      fields: { learning_rate: {}, epochs: {}, max_steps: {}, batch_size: {}, report_to: {}, seed: {} }
    },
    output: { fields: { root: {}, name: {} } },
    probes: { fields: { overfitting: {}, patience: {}, early_stop: {}, forgetting: {}, kl_prompts: {} } }
  },
  sweep: {
    reserved: ['method', 'n', 'seed', 'params'],
    methods: ['grid', 'random'],
    distributions: ['uniform', 'log_uniform', 'int_uniform'],
    sweepable: [
      'model.name',
      'data.max_length',
      'lora.r',
      'lora.alpha',
      'lora.dropout',
      'training.learning_rate',
      'training.epochs',
      'training.batch_size',
      'probes.patience'
    ]
  }
};

const paths = (text: string, schema: IFinetuneSchema = SCHEMA) => findConfigProblems(text, schema).map(p => p.path);

/** The one problem of a body, and the text its range covers. */
function only(text: string): { marked: string; message: string; line: number } {
  const problems = findConfigProblems(text, SCHEMA);
  expect(problems).toHaveLength(1);
  const [p] = problems;
  expect(p.key).toBe(text.slice(p.from, p.to));
  return { marked: text.slice(p.from, p.to), message: p.message, line: p.line };
}

// every construct the hints must read without flagging anything
const VALID = [
  '%%finetune --name demo --dry-run',
  '# a comment: with a colon',
  'model: some/model            # a shorthand section',
  '',
  'data:',
  '    source: $df               # 4-space indentation, a $var',
  '    columns: {prompt: question, completion: answer}',
  '    system_prompt: |',
  '        You answer: briefly.',
  '        notakey: really',
  '',
  '    max_length: {max_len}',
  'lora:',
  '  r: 8',
  '  target_modules: [q_proj, v_proj]',
  'training: &base',
  '  learning_rate: 1e-4',
  '  "batch_size": 4',
  '  report_to:',
  '  - tensorboard',
  '  - name: odd but a list item',
  '    notakey: 1',
  '',
  '  epochs: 1',
  'quantization: none',
  'output: {root: runs, name: "run {i}: x"}',
  'probes:',
  '  early_stop: true',
  '  kl_prompts: 0',
  'sweep:',
  '  training.learning_rate: [1e-4, 3e-4]',
  '  lora.r:',
  '    - 8',
  '    - 16',
  '  training:',
  '    batch_size: [4, 8]',
  '  model.name: [$base, "b/c"]'
].join('\n');

const RANDOM_SWEEP = [
  '%%finetune',
  'training:',
  '  max_steps: 30',
  'sweep:',
  '  method: random',
  '  n: 6',
  '  seed: 0',
  '  params:',
  '    training.learning_rate: {log_uniform: [1e-5, 1e-3]}',
  '    lora.dropout:',
  '      uniform: [0.0, 0.1]',
  '    lora: {r: [8, 16], alpha: {int_uniform: [8, 32]}}',
  '    probes.patience: $patiences'
].join('\n');

describe('config key hints', () => {
  it('reads indentation, comments, lists, flow mappings, block scalars, sweeps and $var/{var} without a false hint', () => {
    expect(findConfigProblems(VALID, SCHEMA)).toEqual([]);
    expect(findConfigProblems(RANDOM_SWEEP, SCHEMA)).toEqual([]);
  });

  it('never flags a key of a valid body while it is being typed', () => {
    for (const body of [VALID, RANDOM_SWEEP]) {
      for (let n = 0; n <= body.length; n++) {
        const problems = findConfigProblems(body.slice(0, n), SCHEMA);
        if (problems.length) {
          throw new Error(`prefix ${JSON.stringify(body.slice(0, n))} flags ${JSON.stringify(problems)}`);
        }
      }
    }
  });

  it.each([
    ['2 spaces', '%%finetune\ntraining:\n  learning_rte: 1e-4\n  max_steps: 3\n'],
    ['4 spaces', '%%finetune\ntraining:\n    max_steps: 3\n\n    # note\n    learning_rte: 1e-4\n'],
    ['a flow mapping', '%%finetune\ntraining: {max_steps: 3, learning_rte: 1e-4}\n'],
    ['a quoted key', '%%finetune\ntraining:\n  "learning_rte": 1e-4\n']
  ])('flags a misspelt field of a section with its did-you-mean (%s)', (_, body) => {
    const p = only(body);
    expect(p.marked).toBe('learning_rte');
    expect(p.message).toBe("unknown key 'learning_rte' in training. Did you mean 'learning_rate'?");
    expect(body.split('\n')[p.line]).toContain('learning_rte');
  });

  it('suggests a short field from a longer name, and lists the fields when nothing is close', () => {
    expect(only('%%finetune\nlora:\n  rank: 8\n').message).toBe("unknown key 'rank' in lora. Did you mean 'r'?");
    expect(only('%%finetune\nprobes:\n  zzz: 1\n').message).toBe(
      "unknown key 'zzz' in probes. Known keys: overfitting, patience, early_stop, forgetting, kl_prompts"
    );
    expect(only('%%finetune\nprobes:\n  early_stp: true\n').message).toBe(
      "unknown key 'early_stp' in probes. Did you mean 'early_stop'?"
    );
  });

  it('says which section a field of another section belongs to', () => {
    expect(only('%%finetune\nlora:\n  r: 8\n  epochs: 3\n').message).toBe(
      "unknown key 'epochs' in lora. 'epochs' belongs under 'training:'"
    );
    expect(only('%%finetune\ntraining:\n  name: x\n').message).toBe(
      "unknown key 'name' in training. 'name' belongs under 'model:' or 'output:'"
    );
    const top = only('%%finetune\nepochs: 3\n');
    expect([top.marked, top.message]).toEqual(['epochs', "unknown section 'epochs'. 'epochs' belongs under 'training:'"]);
  });

  it('flags unknown sections and a dotted key outside sweep:', () => {
    expect(paths('%%finetune\ntrainin:\n  max_steps: 3\noptimizer:\n  lr: 1\n')).toEqual(['trainin', 'optimizer']);
    expect(findConfigProblems('%%finetune\nswep:\n  lora.r: [8]\n', SCHEMA)[0].message).toBe(
      "unknown section 'swep'. Did you mean 'sweep'?"
    );
    expect(only('%%finetune\ntraining.learning_rate: 1e-4\n').message).toBe(
      "unknown section 'training.learning_rate'. Dotted keys are for sweep: only; write 'training:' with " +
        "'learning_rate:' indented under it"
    );
  });

  it('checks the roles of data.columns, block or flow', () => {
    expect(paths('%%finetune\ndata:\n  columns:\n    promt: q\n    completion: a\n')).toEqual(['data.columns.promt']);
    const p = only('%%finetune\ndata:\n  columns: {completion: a, promt: q}\n');
    expect([p.marked, p.message]).toEqual(['promt', "unknown key 'promt' in data.columns. Did you mean 'prompt'?"]);
    expect(paths('%%finetune\ndata:\n  columns: {cols}\n')).toEqual([]); // a {var} expansion
  });

  it('checks the dotted keys of a sweep', () => {
    const sweep = (lines: string[]) => '%%finetune\nsweep:\n' + lines.map(l => `  ${l}`).join('\n');
    expect(only(sweep(['training.learning_rte: [1e-4]'])).message).toBe(
      "unknown sweep key 'training.learning_rte'. Did you mean 'training.learning_rate'?"
    );
    expect(only(sweep(['trainin.learning_rate: [1e-4]'])).message).toBe(
      "unknown sweep key 'trainin.learning_rate'. Did you mean 'training.learning_rate'?"
    );
    expect(only(sweep(['lora.rank: [8, 16]'])).message).toBe("unknown sweep key 'lora.rank'. Did you mean 'lora.r'?");
    expect(only(sweep(['lora.epochs: [1, 2]'])).message).toBe(
      "unknown sweep key 'lora.epochs'. Did you mean 'training.epochs'?"
    );
    expect(only(sweep(['learning_rate: [1e-4]'])).message).toBe(
      "sweep keys are dotted config keys: did you mean 'training.learning_rate'?"
    );
    expect(only(sweep(['output.name: [a, b]'])).message).toBe(
      'output.* cannot be swept: the runs of a sweep share one output section'
    );
    const nested = only(sweep(['trainin:', '  learning_rate: [1e-4]']));
    expect([nested.marked, nested.message]).toEqual(['trainin', "unknown section 'trainin' in sweep. Did you mean 'training'?"]);
    const inner = only(sweep(['training:', '    learning_rte: [1e-4]', '    batch_size: [4]']));
    expect([inner.marked, inner.message]).toEqual([
      'learning_rte',
      "unknown sweep key 'training.learning_rte'. Did you mean 'training.learning_rate'?"
    ]);
    expect(findConfigProblems(sweep(['lora.rank: [8]']), SCHEMA)[0].path).toBe('sweep.lora.rank');
  });

  it('checks the params and distributions of a random sweep', () => {
    const body = RANDOM_SWEEP.replace('{log_uniform:', '{log_unifrom:').replace('lora.dropout:', 'lora.dropot:');
    const problems = findConfigProblems(body, SCHEMA);
    expect(problems.map(p => [p.path, p.message])).toEqual([
      [
        'sweep.params.training.learning_rate.log_unifrom',
        "unknown distribution 'log_unifrom' for training.learning_rate. Did you mean 'log_uniform'?"
      ],
      ['sweep.params.lora.dropot', "unknown sweep key 'lora.dropot'. Did you mean 'lora.dropout'?"]
    ]);
    const stray = only(RANDOM_SWEEP.replace('  seed: 0', '  lora.r: [8]'));
    expect([stray.marked, stray.message]).toEqual(['lora.r', "'lora.r' belongs under sweep.params when params is given"]);
  });

  it('leaves sweep: alone when the server does not describe it', () => {
    const { sweep, ...older } = SCHEMA;
    expect(sweep).toBeDefined();
    expect(paths('%%finetune\nsweep:\n  training.learning_rte: [1e-4]\n', older)).toEqual([]);
  });

  it('skips multi-line flow collections, quoted scalars and list items', () => {
    const body = [
      '%%finetune',
      'lora:',
      '  target_modules: [q_proj,',
      '    v_proj]',
      'data:',
      '  system_prompt: "Answer',
      '    notakey: within the quotes"',
      '  columns: {prompt: q,',
      '            completion: a}',
      'training:',
      '  report_to:',
      '    - mlflow',
      '    - {nested: mapping}',
      '  bogus: 1'
    ].join('\n');
    expect(paths(body)).toEqual(['training.bogus']);
  });

  it('survives unbalanced brackets and quotes', () => {
    for (const body of ['%%finetune\ndata: {a]', '%%finetune\ntraining: {x: [1, {y', "%%finetune\na: 'b\nc: d", '{]}]:']) {
      expect(() => findConfigProblems(body, SCHEMA)).not.toThrow();
    }
    expect(paths('%%finetune\ntraining: {max_step: 1]\n')).toEqual(['training.max_step']);
  });
});

describe('key hint decorations', () => {
  function titles(doc: string): [string, string][] {
    const state = EditorState.create({ doc });
    const out: [string, string][] = [];
    configHintMarks(state, SCHEMA).between(0, doc.length, (from, to, deco) => {
      out.push([doc.slice(from, to), deco.spec.attributes.title]);
    });
    return out;
  }

  it('underlines each problem of a %%finetune cell with its message as the hover title', () => {
    expect(titles('%%finetune\nlora:\n  epochs: 3\nsweep:\n  lora.rank: [8]\n')).toEqual([
      ['epochs', "jupyter-ft: unknown key 'epochs' in lora. 'epochs' belongs under 'training:'"],
      ['lora.rank', "jupyter-ft: unknown sweep key 'lora.rank'. Did you mean 'lora.r'?"]
    ]);
  });

  it('marks nothing in other cells', () => {
    expect(titles('lora:\n  epochs: 3\n')).toEqual([]);
  });
});

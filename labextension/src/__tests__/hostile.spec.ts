// Hostile run names and YAML values render as text (issue #14): the sidebar rows and the sidebar widget,
// the run panel (header, facts, config, chart), the status bar item and the %%finetune key hints, fed run
// summaries, run records, metrics and cell text whose every string is a markup/script payload.
//
// jest runs on node here (jest.config.js), so the widgets render into the small DOM of fakedom.ts, which
// throws on any HTML-parsing sink (innerHTML, insertAdjacentHTML, ...), URL property (href, src, ...) and
// on* attribute: a render path that turned run data into markup would fail these tests, not pass them.
// @lumino/widgets is replaced by a bare Widget (its module reads the browser when it loads) and api.ts by
// jest mocks; the sidebar, panel and status bar themselves, RunsModel and the model/chart code are the real ones.
import { EditorState } from '@codemirror/state';

import { api } from '../api';
import { IFinetuneSchema, configHintMarks } from '../finetuneyaml';
import { IRunSummary, formatStart, statusBadge, verdictBadges } from '../model';
import { RunPanel, configText } from '../panel';
import { RunsModel } from '../runs';
import { RunsSidebar, renderRunRow } from '../sidebar';
import { RunStatusItem } from '../statusbar';
import { FakeElement, FakeEvent, installFakeDom, sinks } from './fakedom';

jest.mock('@lumino/widgets', () => ({ Widget: jest.requireActual('./fakedom').FakeWidget }));
jest.mock('../api', () => ({
  api: { runs: jest.fn(), run: jest.fn(), metrics: jest.fn(), stop: jest.fn(), schema: jest.fn() }
}));

installFakeDom();

const mockApi = api as unknown as { [K in keyof typeof api]: jest.Mock };

const LONG = 'A'.repeat(50000) + '<img src=x onerror=window.__pwned=1>';

const PAYLOADS: [string, string][] = [
  ['an img onerror', '<img src=x onerror="window.__pwned=1">'],
  ['a script closing an attribute', '"><script>window.__pwned=1</script>'],
  ['a javascript: URL', 'javascript:window.__pwned=1//'],
  ['an svg onload', '<svg/onload=window.__pwned=1>'],
  ['an iframe srcdoc', '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>'],
  ['a single-quote attribute break-out', "' onmouseover='window.__pwned=1' x='"],
  ['HTML entities (never decoded)', '&lt;img src=x onerror=window.__pwned=1&gt; &amp; &#60;b&#62;'],
  ['RTL override and zero-width characters', '\u202Etxt.exe\u202C\u200B\u2066<b>x</b>\u2069'],
  ['__proto__', '__proto__'],
  ['constructor', 'constructor'],
  ['a very long string', LONG],
  ['a multi-line message', 'Traceback:\n<img src=x onerror=window.__pwned=1>\n  File "<script>"']
];

const TAGS = new Set(['div', 'span', 'li', 'ul', 'button', 'table', 'tr', 'th', 'td', 'h3', 'pre']);
const SVG_TAGS = new Set(['svg', 'line', 'text', 'path', 'circle']);
const ATTRS = new Set([
  'class', 'id', 'title', 'tabindex', 'data-run-id', 'data-status', 'data-series',
  'width', 'height', 'viewBox', 'x', 'y', 'x1', 'x2', 'y1', 'y2', 'cx', 'cy', 'r', 'd', 'fill', 'text-anchor'
]);
const BADGE_CLASS = /^jft-(badge|verdict) jft-badge-(pending|active|neutral|ok|error|warn)$/;

/** Nothing under ``root`` came from the data but text, attribute values and the known elements. */
function expectInert(root: FakeElement): void {
  expect(sinks).toEqual([]);
  expect((globalThis as any).__pwned).toBeUndefined();
  for (const node of [root, ...root.descendants()]) {
    const tag = node.tagName.toLowerCase();
    expect(node.namespaceURI.endsWith('/svg') ? SVG_TAGS : TAGS).toContain(tag);
    for (const name of node.attributes.keys()) {
      expect(ATTRS).toContain(name);
    }
    for (const value of Object.values(node.style)) {
      expect(value).toMatch(/^(-?\d+%|NaN%|none|)$/);
    }
  }
  // and as markup: text escaped, no element a parser of it would create
  expect(root.outerHTML).not.toMatch(/<(img|script|iframe|object|embed|a|link|style|base|form|b)[\s/>]/i);
}

function texts(root: FakeElement, selector: string): string[] {
  return root.querySelectorAll(selector).map(e => e.textContent);
}

function hostileRun(p: string, partial: Partial<IRunSummary> = {}): IRunSummary {
  return {
    id: p,
    name: p,
    status: 'failed',
    created_at: p,
    started_at: p,
    finished_at: p,
    error: p,
    summary: { best_eval_loss: 0.5, final_train_loss: p, best_eval_step: p, train_seconds: p },
    config: { [p]: p, model: { name: p } },
    progress: { step: 3, max_steps: 10, eta: 5 },
    verdicts: { overfitting: p, forgetting: p },
    ...partial
  };
}

/** The run record of GET runs/<id>: every string hostile, keys too (through JSON, as the server sends it:
 * ``__proto__`` is then an own key, not the prototype). */
function hostileRecord(p: string): { [key: string]: any } {
  return JSON.parse(
    JSON.stringify({
      id: p,
      name: p,
      status: 'failed',
      path: p,
      error: p,
      model: { name: p },
      summary: { final_train_loss: p, best_eval_loss: 0.25, best_eval_step: p, train_seconds: p },
      config: {
        [p]: { [p]: p, nested: { [p]: [p, 1] } },
        model: { name: p },
        data: { system_prompt: p, columns: { [p]: p } },
        training: { learning_rate: p }
      }
    })
  );
}

/** Metric rows with hostile names and values: only numeric steps and losses may reach the chart. */
function hostileMetrics(p: string): any[] {
  return [
    { step: 1, loss: 2.0, [p]: p, learning_rate: p },
    { step: 2, loss: p },
    { step: p, loss: 1.5 },
    { step: 2, eval_loss: 1.0, [p]: 1 },
    { step: 3, loss: 1.2, eval_loss: p }
  ];
}

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise(resolve => setTimeout(resolve, 0));
  }
}

const disposables: { dispose(): void }[] = [];

beforeEach(() => {
  sinks.length = 0;
  delete (globalThis as any).__pwned;
  for (const m of Object.values(mockApi)) {
    m.mockReset();
  }
});

afterEach(() => {
  while (disposables.length) {
    disposables.pop()!.dispose();
  }
});

async function modelWith(runs: IRunSummary[]): Promise<RunsModel> {
  mockApi.runs.mockResolvedValue({ run_root: '/runs', runs });
  const model = new RunsModel();
  disposables.push(model);
  await model.refresh();
  return model;
}

describe.each(PAYLOADS)('hostile data: %s', (_what, p) => {
  it('a sidebar row shows the name, status, dates, verdicts and error as text', () => {
    const row = renderRunRow(hostileRun(p)) as unknown as FakeElement;
    expectInert(row);
    expect(texts(row, '.jft-run-name')).toEqual([p]);
    expect(row.dataset.runId).toBe(p);
    expect(row.title).toBe(`${p}\n${p}`);
    expect(texts(row, '.jft-run-start')).toEqual([`started ${formatStart(p)}`]);
    expect(texts(row, '.jft-verdict')).toEqual([`overfitting: ${p}`, `forgetting: ${p}`]);
    expect(texts(row, '.jft-run-error')).toEqual([p.split('\n')[0]]);
  });

  it('a sidebar row of a run with a hostile status and progress', () => {
    const run = hostileRun(p, { status: p, progress: { step: p as any, max_steps: p as any, eta: p as any } });
    const row = renderRunRow(run) as unknown as FakeElement;
    expectInert(row);
    expect(row.dataset.status).toBe(p);
    const badges = row.querySelectorAll('.jft-badge');
    expect(badges[0].textContent).toBe(p);
    for (const b of badges) {
      expect(b.className).toMatch(BADGE_CLASS); // a status such as "constructor" picks no class from the prototype
    }
    expect(row.textContent).toContain(`step ${p}`);
  });

  it('the badges keep to their classes whatever the status or verdict', () => {
    expect(statusBadge(p).className).toMatch(BADGE_CLASS);
    for (const v of verdictBadges({ overfitting: p, forgetting: p })) {
      expect(v.className).toMatch(BADGE_CLASS);
    }
  });

  it('the sidebar lists hostile runs as text and opens the exact id on click and Enter', async () => {
    const model = await modelWith([hostileRun(p), hostileRun(p + '2', { status: 'running' })]);
    const open = jest.fn();
    const sidebar = new RunsSidebar(model, open);
    disposables.push(sidebar);
    const node = sidebar.node as unknown as FakeElement;
    expectInert(node);
    expect(texts(node, '.jft-run-name')).toEqual([p, p + '2']);

    node.querySelectorAll('.jft-run-name')[0].dispatchEvent(new FakeEvent('click'));
    expect(open).toHaveBeenLastCalledWith(p);
    node.querySelectorAll('.jft-run')[1].dispatchEvent(new FakeEvent('keydown', { key: 'Enter' }));
    expect(open).toHaveBeenLastCalledWith(p + '2');
    expect(node.querySelectorAll('.jft-selected').map(r => r.dataset.runId)).toEqual([p + '2']);
    expectInert(node);
  });

  it('the sidebar shows a hostile error message of the server as text', async () => {
    mockApi.runs.mockRejectedValue(new Error(p));
    const model = new RunsModel();
    disposables.push(model);
    const sidebar = new RunsSidebar(model, jest.fn());
    disposables.push(sidebar);
    await model.refresh();
    const node = sidebar.node as unknown as FakeElement;
    expectInert(node);
    expect(texts(node, '.jft-sidebar-message')).toEqual([`Could not list the runs: ${p}`]);
  });

  it('the status bar shows the active run name as text', async () => {
    const model = await modelWith([hostileRun(p + 'x'), hostileRun(p, { status: 'running' })]);
    const open = jest.fn();
    const item = new RunStatusItem(model, open);
    disposables.push(item);
    const node = item.node as unknown as FakeElement;
    expectInert(node);
    expect(texts(node, '.jft-statusbar-text')).toEqual([`${p}: step 3/10 (30%) · ETA 0:05`]);
    expect(node.dataset.runId).toBe(p);
    node.dispatchEvent(new FakeEvent('click'));
    expect(open).toHaveBeenCalledWith(p);
  });

  it('the status bar of a queued run with hostile progress', async () => {
    const model = await modelWith([hostileRun(p, { status: 'queued', progress: { step: p as any } })]);
    const item = new RunStatusItem(model, jest.fn());
    disposables.push(item);
    const node = item.node as unknown as FakeElement;
    expectInert(node);
    expect(texts(node, '.jft-statusbar-text')).toEqual([`${p}: queued`]);
  });

  it('configText writes hostile keys and values as they are', () => {
    const text = configText(hostileRecord(p).config);
    expect(text.startsWith(`${p}:\n  ${p}: ${p}\n`)).toBe(true);
    expect(text).toContain(`  system_prompt: ${p}`);
    expect(text).toContain(`    ${p}: ${JSON.stringify([p, 1])}`);
  });

  it('the run panel shows the record, config and facts as text and plots only numbers', async () => {
    const model = await modelWith([hostileRun(p)]);
    mockApi.metrics.mockResolvedValue({ run_id: p, status: 'failed', since: null, last_step: 3, metrics: hostileMetrics(p) });
    mockApi.run.mockResolvedValue(hostileRecord(p));
    const onStop = jest.fn().mockResolvedValue(true);
    const panel = new RunPanel(p, model, onStop);
    disposables.push(panel);
    await flush();
    const node = panel.node as unknown as FakeElement;
    expectInert(node);
    expect(mockApi.metrics).toHaveBeenCalledWith(p, null);
    expect(mockApi.run).toHaveBeenCalledWith(p);
    expect(panel.title.label).toBe(p);
    expect(node.dataset.runId).toBe(p);

    expect(texts(node, '.jft-panel-name')).toEqual([p]);
    expect(texts(node, '.jft-verdict')).toEqual([`overfitting: ${p}`, `forgetting: ${p}`]);
    const facts = new Map(node.querySelectorAll('tr').map(tr => [tr.children[0].textContent, tr.children[1].textContent]));
    expect(facts.get('run id')).toBe(p);
    expect(facts.get('directory')).toBe(p);
    expect(facts.get('model')).toBe(p);
    expect(facts.get('error')).toBe(p);
    expect(facts.get('best eval loss')).toBe(`0.25 (step ${p})`);
    expect(facts.has('final train loss')).toBe(false); // a string is no loss
    expect(texts(node, 'pre.jft-config')).toEqual([configText(hostileRecord(p).config)]);

    // the chart: the train and eval curves of the numeric rows, legend and ticks of the extension's own
    const svg = node.querySelector('svg')!;
    expect(svg.querySelectorAll('.jft-legend').map(t => t.textContent)).toEqual(['train loss', 'eval loss']);
    for (const t of svg.querySelectorAll('text')) {
      expect(t.textContent).toMatch(/^(-?[\d.e+-]+|step|train loss|eval loss)$/);
    }
    for (const path of svg.querySelectorAll('path')) {
      expect(path.getAttribute('d')).toMatch(/^[ML\d.,-]+$/);
    }
  });

  it('the run panel of an active run stops the exact id', async () => {
    const model = await modelWith([hostileRun(p, { status: 'running' })]);
    mockApi.metrics.mockResolvedValue({ run_id: p, status: 'running', since: null, last_step: 1, metrics: hostileMetrics(p) });
    mockApi.run.mockResolvedValue({ ...hostileRecord(p), status: 'running', error: null });
    const onStop = jest.fn().mockResolvedValue(true);
    const panel = new RunPanel(p, model, onStop);
    disposables.push(panel);
    await flush();
    const node = panel.node as unknown as FakeElement;
    expectInert(node);
    node.querySelector('button.jft-stop')!.dispatchEvent(new FakeEvent('click'));
    expect(onStop).toHaveBeenCalledWith(p);
  });

  it('the run panel shows a hostile error of the server as text', async () => {
    const model = await modelWith([]);
    mockApi.metrics.mockRejectedValue(new Error(p));
    const panel = new RunPanel(p, model, jest.fn());
    disposables.push(panel);
    await flush();
    const node = panel.node as unknown as FakeElement;
    expectInert(node);
    expect(texts(node, '.jft-panel-details')).toEqual([`Could not read run ${p}: ${p}`]);
  });
});

// The key hints of a %%finetune cell are CodeMirror mark decorations: CodeMirror's view (which needs a real
// DOM) writes their attributes with setAttribute, so what is checked is the decoration spec, the largest
// pure part: a fixed tag, class and attribute names, the hostile key only inside attribute values.
describe('%%finetune key hints with hostile keys', () => {
  const SCHEMA: IFinetuneSchema = {
    sections: {
      model: { fields: { name: {} } },
      training: { fields: { learning_rate: {}, max_steps: {} } }
    },
    sweep: { reserved: ['method', 'n', 'seed', 'params'], distributions: ['uniform'], sweepable: ['training.learning_rate'] }
  };
  const quotable = PAYLOADS.filter(([, p]) => !p.includes('\n') && !(p.includes("'") && /["\\]/.test(p)));

  it.each(quotable)('%s', (_what, p) => {
    const key = p.includes("'") ? `"${p}"` : `'${p}'`;
    const doc = `%%finetune\n${key}: 1\ntraining:\n  ${key}: 2\n  learning_rate: ${p.includes("'") ? `"${p}"` : `'${p}'`}\nsweep:\n  ${key}: [1, 2]\n`;
    const marks: { text: string; spec: any }[] = [];
    configHintMarks(EditorState.create({ doc }), SCHEMA).between(0, doc.length, (from, to, deco) => {
      marks.push({ text: doc.slice(from, to), spec: deco.spec });
    });
    expect(marks.map(m => m.text)).toEqual([p, p, p]);
    expect(marks.map(m => m.spec.attributes['data-jft-path'])).toEqual([p, `training.${p}`, `sweep.${p}`]);
    for (const { spec } of marks) {
      expect(spec.tagName).toBeUndefined(); // CodeMirror's default <span>
      expect(spec.class).toBe('jft-unknown-key');
      expect(Object.keys(spec.attributes).sort()).toEqual(['data-jft-path', 'title']);
      expect(spec.attributes.title).toContain(`'${p}'`);
      expect(spec.attributes.title.startsWith('jupyter-ft: ')).toBe(true);
    }
  });
});

// A run.json written by hand or by another version: numbers as strings must not break the panel's render.
describe('numbers that are strings', () => {
  it('the run panel renders facts and chart for numeric strings', async () => {
    const model = await modelWith([]);
    mockApi.metrics.mockResolvedValue({
      run_id: 'r',
      status: 'finished',
      since: null,
      last_step: 2,
      metrics: [{ step: 1, loss: '2.5' }, { step: 2, loss: 1.5, eval_loss: '1e3' }]
    });
    mockApi.run.mockResolvedValue({
      id: 'r',
      name: 'r',
      summary: { final_train_loss: '0.5', best_eval_loss: '1e3', best_eval_step: '2', train_seconds: '42' },
      config: {}
    });
    const panel = new RunPanel('r', model, jest.fn());
    disposables.push(panel);
    await flush();
    const node = panel.node as unknown as FakeElement;
    expectInert(node);
    const facts = new Map(node.querySelectorAll('tr').map(tr => [tr.children[0].textContent, tr.children[1].textContent]));
    expect(facts.get('run id')).toBe('r');
    expect(facts.has('final train loss')).toBe(false);
    expect(node.querySelectorAll('path').length).toBe(1); // the one numeric train loss
  });
});

import {
  IRunSummary,
  ISchema,
  activeRun,
  bestEvalLoss,
  formatDuration,
  formatEta,
  formatGpuMemory,
  formatLoss,
  formatProgress,
  formatStart,
  isActive,
  isFinetuneCell,
  lossSeries,
  mergeMetrics,
  progressFraction,
  statusBadge,
  statusBarText,
  suggest,
  verdictBadges
} from '../model';
import { findConfigProblems } from '../finetuneyaml';

// The shape GET jupyter-ft/api/schema answers (a subset of FineTuneConfig's fields).
const SCHEMA: ISchema = {
  sections: {
    model: { fields: { name: {}, revision: {}, trust_remote_code: {} } },
    data: { fields: { source: {}, columns: {}, max_length: {}, system_prompt: {} } },
    lora: { fields: { r: {}, alpha: {}, dropout: {} } },
    training: { fields: { learning_rate: {}, max_steps: {}, batch_size: {}, epochs: {} } },
    output: { fields: { root: {}, name: {} } }
  }
};

function run(partial: Partial<IRunSummary>): IRunSummary {
  return { id: 'r', name: 'r', status: 'finished', ...partial };
}

describe('status badges', () => {
  it.each([
    ['running', 'jft-badge jft-badge-active'],
    ['queued', 'jft-badge jft-badge-pending'],
    ['stopping', 'jft-badge jft-badge-pending'],
    ['finished', 'jft-badge jft-badge-ok'],
    ['failed', 'jft-badge jft-badge-error'],
    ['interrupted', 'jft-badge jft-badge-warn'],
    ['stopped', 'jft-badge jft-badge-neutral'],
    ['corrupt', 'jft-badge jft-badge-error']
  ])('%s -> %s', (status, cls) => {
    expect(statusBadge(status)).toEqual({ label: status, className: cls });
  });

  it('keeps an unknown status as its label and a missing one as "unknown"', () => {
    expect(statusBadge('exploded')).toEqual({ label: 'exploded', className: 'jft-badge jft-badge-neutral' });
    expect(statusBadge(undefined).label).toBe('unknown');
  });

  it('knows which statuses are active', () => {
    expect(['queued', 'running', 'stopping'].map(isActive)).toEqual([true, true, true]);
    expect(['finished', 'failed', 'stopped', 'interrupted', null].map(isActive)).toEqual([
      false,
      false,
      false,
      false,
      false
    ]);
  });
});

describe('durations, progress and ETA', () => {
  it('formats durations', () => {
    expect(formatDuration(0)).toBe('0:00');
    expect(formatDuration(42.4)).toBe('0:42');
    expect(formatDuration(59.6)).toBe('1:00');
    expect(formatDuration(725)).toBe('12:05');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(null)).toBe('—');
    expect(formatDuration(-1)).toBe('—');
    expect(formatDuration(Infinity)).toBe('—');
  });

  it('computes the fraction only when the total is known', () => {
    expect(progressFraction({ step: 12, max_steps: 30 })).toBeCloseTo(0.4);
    expect(progressFraction({ step: 40, max_steps: 30 })).toBe(1);
    expect(progressFraction({ step: 3, max_steps: 0 })).toBeNull();
    expect(progressFraction({ step: 3 })).toBeNull();
    expect(progressFraction(null)).toBeNull();
  });

  it('formats progress', () => {
    expect(formatProgress({ step: 12, max_steps: 30 })).toBe('step 12/30 (40%)');
    expect(formatProgress({ step: 29, max_steps: 30 })).toBe('step 29/30 (96%)'); // floor: 100% only when done
    expect(formatProgress({ step: 30, max_steps: 30 })).toBe('step 30/30 (100%)');
    expect(formatProgress({ step: 5 })).toBe('step 5');
    expect(formatProgress({})).toBe('');
    expect(formatProgress(undefined)).toBe('');
  });

  it('formats the ETA', () => {
    expect(formatEta({ step: 1, max_steps: 10, eta: 95 })).toBe('ETA 1:35');
    expect(formatEta({ step: 0, max_steps: 10, eta: null })).toBe('ETA —');
    expect(formatEta(null)).toBe('ETA —');
  });

  it('writes the status bar text of the active run', () => {
    const p = { step: 12, max_steps: 30, eta: 15 };
    expect(statusBarText(run({ name: 'demo', status: 'running', progress: p }))).toBe(
      'demo: step 12/30 (40%) · ETA 0:15'
    );
    expect(statusBarText(run({ name: 'demo', status: 'stopping', progress: p }))).toBe(
      'demo: step 12/30 (40%) · stopping…'
    );
    expect(statusBarText(run({ name: 'demo', status: 'running' }))).toBe('demo: starting…');
    expect(statusBarText(run({ name: 'demo', status: 'queued' }))).toBe('demo: queued');
    expect(statusBarText(null)).toBe('');
    const gpu = { ...p, gpu_peak: 2.14 * 2 ** 30, gpu_total: 15 * 2 ** 30 };  // a CUDA run on a T4
    expect(statusBarText(run({ name: 'demo', status: 'running', progress: gpu }))).toBe(
      'demo: step 12/30 (40%) · ETA 0:15 · GPU 2.1/15 GiB'
    );
    expect(formatGpuMemory({ step: 1, gpu_peak: null, gpu_total: 15 * 2 ** 30 })).toBe('');
    expect(formatGpuMemory(null)).toBe('');
  });

  it('picks the running run over a queued one, and none when all ended', () => {
    const runs = [run({ id: 'q', status: 'queued' }), run({ id: 'a', status: 'running' }), run({ id: 'f' })];
    expect(activeRun(runs)!.id).toBe('a');
    expect(activeRun([runs[0], runs[2]])!.id).toBe('q');
    expect(activeRun([runs[2]])).toBeNull();
  });
});

describe('losses, times and verdicts', () => {
  it('formats losses with three significant digits', () => {
    expect(formatLoss(1.23456)).toBe('1.23');
    expect(formatLoss(0.012345)).toBe('0.0123');
    expect(formatLoss(12.345)).toBe('12.3');
    expect(formatLoss(null)).toBe('—');
    expect(formatLoss(NaN)).toBe('—');
  });

  it('reads the best eval loss from the summary', () => {
    expect(bestEvalLoss(run({ summary: { best_eval_loss: 0.5 } }))).toBe(0.5);
    expect(bestEvalLoss(run({ summary: { best_eval_loss: null } }))).toBeNull();
    expect(bestEvalLoss(run({}))).toBeNull();
    expect(bestEvalLoss(run({ status: 'running', best_eval_loss: 0.7, summary: {} }))).toBe(0.7);
  });

  it('formats start times relative to today', () => {
    const now = new Date(2026, 10, 23, 18, 0);
    expect(formatStart(new Date(2026, 10, 23, 9, 5).toISOString(), now)).toBe('09:05');
    expect(formatStart(new Date(2026, 0, 5, 14, 2).toISOString(), now)).toBe('Jan 5 14:02');
    expect(formatStart(new Date(2025, 11, 31, 23, 59).toISOString(), now)).toBe('Dec 31 2025 23:59');
    expect(formatStart(null, now)).toBe('');
    expect(formatStart('not a date', now)).toBe('not a date');
  });

  it('makes verdict badges for the probes that ran', () => {
    expect(verdictBadges({ overfitting: 'suspected', forgetting: 'none' })).toEqual([
      { label: 'overfitting: suspected', className: 'jft-verdict jft-badge-warn' },
      { label: 'forgetting: none', className: 'jft-verdict jft-badge-ok' }
    ]);
    expect(verdictBadges({ overfitting: 'overfitting', forgetting: 'severe' }).map(b => b.className)).toEqual([
      'jft-verdict jft-badge-error',
      'jft-verdict jft-badge-error'
    ]);
    expect(verdictBadges({ overfitting: null, forgetting: 'mild' })).toEqual([
      { label: 'forgetting: mild', className: 'jft-verdict jft-badge-warn' }
    ]);
    expect(verdictBadges(null)).toEqual([]);
  });
});

describe('incremental metrics', () => {
  it('appends new steps and moves the cursor', () => {
    const a = mergeMetrics([], [
      { step: 1, loss: 3 },
      { step: 2, loss: 2.8 }
    ]);
    expect(a.cursor).toBe(2);
    const b = mergeMetrics(a.rows, [
      { step: 3, loss: 2.5 },
      { step: 3, eval_loss: 2.6 }
    ]);
    expect(b.rows.map(r => [r.step, 'eval_loss' in r ? 'eval' : 'train'])).toEqual([
      [1, 'train'],
      [2, 'train'],
      [3, 'train'],
      [3, 'eval']
    ]);
    expect(b.cursor).toBe(3);
  });

  it('never duplicates a step an overlapping poll sends again', () => {
    const held = mergeMetrics([], [
      { step: 1, loss: 3 },
      { step: 2, loss: 2.8 }
    ]).rows;
    const again = mergeMetrics(held, [
      { step: 2, loss: 2.75 },
      { step: 3, loss: 2.5 }
    ]);
    expect(again.rows.map(r => r.step)).toEqual([1, 2, 3]);
    expect(again.rows[1].loss).toBe(2.75); // the newer line wins
  });

  it('keeps the cursor of an empty page and sorts out-of-order rows', () => {
    expect(mergeMetrics([], [])).toEqual({ rows: [], cursor: null });
    const m = mergeMetrics([{ step: 5, loss: 1 }], [{ step: 4, loss: 2 }, { bad: true } as any]);
    expect(m.rows.map(r => r.step)).toEqual([4, 5]);
    expect(m.cursor).toBe(5);
  });

  it('splits the rows into train and eval loss curves', () => {
    const rows = [
      { step: 1, loss: 3, learning_rate: 1e-3 },
      { step: 2, loss: 2 },
      { step: 2, eval_loss: 2.5 },
      { step: 3, loss: NaN }
    ];
    expect(lossSeries(rows)).toEqual({
      train: [
        [1, 3],
        [2, 2]
      ],
      eval: [[2, 2.5]]
    });
  });
});

describe('%%finetune cells', () => {
  it('detects the cell magic on the first line only', () => {
    expect(isFinetuneCell('%%finetune\nmodel: x')).toBe(true);
    expect(isFinetuneCell('%%finetune --name demo --wait\ntraining:\n  max_steps: 3')).toBe(true);
    expect(isFinetuneCell('%%finetune')).toBe(true);
    expect(isFinetuneCell('%%finetuned\nx')).toBe(false);
    expect(isFinetuneCell('%finetune x')).toBe(false);
    expect(isFinetuneCell('# comment\n%%finetune')).toBe(false);
    expect(isFinetuneCell(' %%finetune')).toBe(false);
    expect(isFinetuneCell('print("%%finetune")')).toBe(false);
  });
});

describe('unknown config keys', () => {
  it('accepts a valid body', () => {
    const body = [
      '%%finetune --name ok',
      'model:',
      '  name: tiny',
      'data:',
      '  source: demo:support_tickets',
      '  columns:',
      '    prompt: question   # deeper keys are the roles, not fields',
      '    completion: answer',
      '  max_length: 128',
      'training:',
      '  learning_rate: 1e-3',
      '  max_steps: 30',
      '# a comment: with a colon',
      'output: {root: runs}'
    ].join('\n');
    expect(findConfigProblems(body, SCHEMA)).toEqual([]);
  });

  it('flags a misspelt field with a suggestion and its exact position', () => {
    const body = '%%finetune\ntraining:\n  learning_rat: 1e-3\n  batch_size: 4\n';
    const [p, ...rest] = findConfigProblems(body, SCHEMA);
    expect(rest).toEqual([]);
    expect(p.path).toBe('training.learning_rat');
    expect(p.line).toBe(2);
    expect(body.slice(p.from, p.to)).toBe('learning_rat');
    expect(p.message).toBe("unknown key 'learning_rat' in training. Did you mean 'learning_rate'?");
  });

  it('flags an unknown section and lists the sections when nothing is close', () => {
    const problems = findConfigProblems('%%finetune\ntrainin:\n  max_steps: 3\noptimizer:\n  lr: 1\n', SCHEMA);
    expect(problems.map(p => p.path)).toEqual(['trainin', 'optimizer']);
    expect(problems[0].message).toBe("unknown section 'trainin'. Did you mean 'training'?");
    expect(problems[1].message).toBe('unknown section \'optimizer\'. Sections: model, data, lora, training, output, sweep');
  });

  it('lists the known keys when nothing is close', () => {
    const [p] = findConfigProblems('%%finetune\nlora:\n  quantum_flux: 8\n', SCHEMA);
    expect(p.message).toBe("unknown key 'quantum_flux' in lora. Known keys: r, alpha, dropout");
  });

  it('does not look inside block scalars or shorthand sections', () => {
    const body = [
      '%%finetune',
      'data:',
      '  system_prompt: |',
      '    Answer: briefly.',
      '    notakey: really',
      '  max_length: 64',
      'model: some/model',
      'training:',
      '  epochs: 1'
    ].join('\n');
    expect(findConfigProblems(body, SCHEMA)).toEqual([]);
    const after = body + '\n  bogus_field: 1';
    expect(findConfigProblems(after, SCHEMA).map(p => p.path)).toEqual(['training.bogus_field']);
  });

  it('handles an indented body and a body without the magic', () => {
    expect(findConfigProblems('  training:\n    max_step: 3', SCHEMA).map(p => p.path)).toEqual(['training.max_step']);
  });

  it('suggests only close names', () => {
    expect(suggest('learning_rat', ['learning_rate', 'max_steps'])).toBe('learning_rate');
    expect(suggest('Max_Steps', ['learning_rate', 'max_steps'])).toBe('max_steps');
    expect(suggest('xyz', ['learning_rate', 'max_steps'])).toBeNull();
  });
});

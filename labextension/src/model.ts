/**
 * The data and formatting logic of the extension, free of JupyterLab and the DOM so that it is unit
 * tested on its own (src/__tests__/model.spec.ts). The widgets only render what these functions return.
 */

/** Statuses a run can have (jupyter_ft/store/record.py STATUSES); an unknown one is shown as it is. */
export const ACTIVE_STATUSES = ['queued', 'running', 'stopping'];

/** What ``progress.json`` holds, written by the training thread about once a second. */
export interface IProgress {
  step?: number | null;
  max_steps?: number | null;
  epoch?: number | null;
  elapsed?: number | null;
  eta?: number | null;
  time?: number | null;
  /** CUDA runs only: the run's peak so far and the card's size, in bytes */
  gpu_peak?: number | null;
  gpu_total?: number | null;
}

export interface IVerdicts {
  overfitting?: string | null;
  forgetting?: string | null;
}

/** One entry of ``GET jupyter-ft/api/runs`` (the server's ``_light`` view of run.json). */
export interface IRunSummary {
  id: string;
  name: string;
  status: string;
  created_at?: string | null;
  started_at?: string | null;
  finished_at?: string | null;
  error?: string | null;
  summary?: { [key: string]: any };
  config?: { [key: string]: any };
  progress?: IProgress | null;
  verdicts?: IVerdicts | null;
  /** the best eval loss so far (the summary's once the run ended) */
  best_eval_loss?: number | null;
}

/** One line of metrics.jsonl: a train log (``loss``) or an evaluation (``eval_loss``). */
export interface IMetricRow {
  step: number;
  loss?: number;
  eval_loss?: number;
  learning_rate?: number;
  tokens_per_s?: number;
  [key: string]: any;
}

export interface IBadge {
  label: string;
  className: string;
}

export function isActive(status: string | null | undefined): boolean {
  return !!status && ACTIVE_STATUSES.includes(status);
}

const BADGE_KIND: { [status: string]: string } = {
  queued: 'pending',
  running: 'active',
  stopping: 'pending',
  stopped: 'neutral',
  finished: 'ok',
  failed: 'error',
  interrupted: 'warn',
  // a run directory whose run.json cannot be read (the store lists it with the reason; %ft_rm removes it)
  corrupt: 'error'
};

/** ``table[key]`` when it is an entry of the table itself: a status or verdict such as ``constructor`` or
 * ``__proto__`` (run data) must not pick a CSS class from Object.prototype. */
function ownEntry(table: { [key: string]: string }, key: string): string | undefined {
  return Object.prototype.hasOwnProperty.call(table, key) ? table[key] : undefined;
}

/** The badge of a status: its label and a CSS class (``jft-badge jft-badge-<kind>``). */
export function statusBadge(status: string | null | undefined): IBadge {
  const label = status || 'unknown';
  const kind = ownEntry(BADGE_KIND, label) || 'neutral';
  return { label, className: `jft-badge jft-badge-${kind}` };
}

/** ``42`` -> ``0:42``, ``3725`` -> ``1:02:05``; a missing or negative value is an em dash. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return '—';
  }
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** The fraction of the run done (0..1), or null when the total is not known yet. */
export function progressFraction(progress: IProgress | null | undefined): number | null {
  if (!progress || progress.step === null || progress.step === undefined) {
    return null;
  }
  const total = progress.max_steps;
  if (!total || total <= 0) {
    return null;
  }
  return Math.max(0, Math.min(1, progress.step / total));
}

/** ``step 12/30 (40%)``; ``step 12`` without a total; empty when nothing is known. */
export function formatProgress(progress: IProgress | null | undefined): string {
  if (!progress || progress.step === null || progress.step === undefined) {
    return '';
  }
  const frac = progressFraction(progress);
  if (frac === null) {
    return `step ${progress.step}`;
  }
  return `step ${progress.step}/${progress.max_steps} (${Math.floor(frac * 100)}%)`;
}

/** ``ETA 1:05`` while a run trains; ``ETA —`` before the first step made the rate known. */
export function formatEta(progress: IProgress | null | undefined): string {
  return `ETA ${formatDuration(progress ? progress.eta : null)}`;
}

/** ``GPU 2.1/15 GiB``: a CUDA run's memory peak so far against its card; empty elsewhere. */
export function formatGpuMemory(progress: IProgress | null | undefined): string {
  if (!progress || !progress.gpu_peak || !progress.gpu_total) {
    return '';
  }
  const gib = 2 ** 30;
  return `GPU ${(progress.gpu_peak / gib).toFixed(1)}/${Math.round(progress.gpu_total / gib)} GiB`;
}

/** The status bar text for an active run: ``name: step 12/30 (40%) · ETA 0:15`` (`` · GPU 2.1/15 GiB``
 * on CUDA: watching the peak approach the card is how an out-of-memory error is seen coming). */
export function statusBarText(run: IRunSummary | null): string {
  if (!run) {
    return '';
  }
  if (run.status === 'queued') {
    return `${run.name}: queued`;
  }
  const progress = formatProgress(run.progress);
  if (!progress) {
    return `${run.name}: ${run.status === 'stopping' ? 'stopping' : 'starting'}…`;
  }
  const tail = run.status === 'stopping' ? 'stopping…' : formatEta(run.progress);
  const gpu = formatGpuMemory(run.progress);
  return `${run.name}: ${progress} · ${tail}` + (gpu ? ` · ${gpu}` : '');
}

/** A loss with three significant digits (``0.0123``, ``1.23``, ``12.3``); an em dash when missing. */
export function formatLoss(value: number | null | undefined): string {
  if (typeof value !== 'number' || !isFinite(value)) {
    // also a string from a hand-edited run.json ("0.5"), which has no toPrecision
    return '—';
  }
  return Number(value.toPrecision(3)).toString();
}

/** A run's start (or creation) time: ``14:02`` today, ``Jan 5 14:02`` otherwise; local time. */
export function formatStart(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) {
    return '';
  }
  const t = new Date(iso);
  if (isNaN(t.getTime())) {
    return iso;
  }
  const hm = `${String(t.getHours()).padStart(2, '0')}:${String(t.getMinutes()).padStart(2, '0')}`;
  const sameDay =
    t.getFullYear() === now.getFullYear() && t.getMonth() === now.getMonth() && t.getDate() === now.getDate();
  if (sameDay) {
    return hm;
  }
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const year = t.getFullYear() === now.getFullYear() ? '' : ` ${t.getFullYear()}`;
  return `${months[t.getMonth()]} ${t.getDate()}${year} ${hm}`;
}

/** The best eval loss of a run: so far (the server reads it from the metrics of an active run), else the
 * summary's; null before the first evaluation. */
export function bestEvalLoss(run: IRunSummary): number | null {
  if (typeof run.best_eval_loss === 'number') {
    return run.best_eval_loss;
  }
  const v = (run.summary || {}).best_eval_loss;
  return typeof v === 'number' ? v : null;
}

const VERDICT_KIND: { [v: string]: string } = {
  ok: 'ok',
  none: 'ok',
  suspected: 'warn',
  mild: 'warn',
  overfitting: 'error',
  severe: 'error'
};

/** The probe verdict badges of a run (overfitting, forgetting); nothing for a probe that did not run. */
export function verdictBadges(verdicts: IVerdicts | null | undefined): IBadge[] {
  const out: IBadge[] = [];
  if (!verdicts) {
    return out;
  }
  const add = (what: string, value: string | null | undefined) => {
    if (!value) {
      return;
    }
    const kind = ownEntry(VERDICT_KIND, value) || 'neutral';
    out.push({ label: `${what}: ${value}`, className: `jft-verdict jft-badge-${kind}` });
  };
  add('overfitting', verdicts.overfitting);
  add('forgetting', verdicts.forgetting);
  return out;
}

/** The run the status bar follows: a running (or stopping) one first, else a queued one. */
export function activeRun(runs: IRunSummary[]): IRunSummary | null {
  return (
    runs.find(r => r.status === 'running' || r.status === 'stopping') || runs.find(r => r.status === 'queued') || null
  );
}

// --------------------------------------------------------------------------- metrics

function rowKey(row: IMetricRow): string {
  return `${row.step}:${'eval_loss' in row ? 'eval' : 'train'}`;
}

/**
 * Merge a page of metrics (``?since=<cursor>``) into what is held: a row already held (same step, same
 * kind: train log or evaluation) is replaced, the result is sorted by step; the new cursor is the
 * highest step seen. A poll that overlaps the previous one therefore never duplicates a point.
 */
export function mergeMetrics(
  held: IMetricRow[],
  page: IMetricRow[]
): { rows: IMetricRow[]; cursor: number | null } {
  const byKey = new Map<string, IMetricRow>();
  for (const row of held) {
    byKey.set(rowKey(row), row);
  }
  for (const row of page) {
    if (typeof row.step !== 'number') {
      continue;
    }
    byKey.set(rowKey(row), row);
  }
  const rows = Array.from(byKey.values()).sort(
    (a, b) => a.step - b.step || Number('eval_loss' in a) - Number('eval_loss' in b)
  );
  const cursor = rows.length ? rows[rows.length - 1].step : null;
  return { rows, cursor };
}

export type Point = [number, number];

/** The train and eval loss curves of a run, as (step, loss) points. */
export function lossSeries(rows: IMetricRow[]): { train: Point[]; eval: Point[] } {
  const train: Point[] = [];
  const evals: Point[] = [];
  for (const row of rows) {
    if (typeof row.loss === 'number' && isFinite(row.loss)) {
      train.push([row.step, row.loss]);
    }
    if (typeof row.eval_loss === 'number' && isFinite(row.eval_loss)) {
      evals.push([row.step, row.eval_loss]);
    }
  }
  return { train, eval: evals };
}

// --------------------------------------------------------------------------- %%finetune cells

const MAGIC = /^%%finetune(\s|$)/;

/** Whether a cell is a ``%%finetune`` cell: its first line starts with the cell magic. */
export function isFinetuneCell(text: string): boolean {
  return MAGIC.test(text);
}

/** The config schema served by ``GET jupyter-ft/api/schema`` (built from FineTuneConfig). */
export interface ISchema {
  sections: {
    [section: string]: {
      doc?: string;
      fields: { [field: string]: { type?: string; default?: any } };
    };
  };
}

export interface IKeyProblem {
  /** offsets into the cell text */
  from: number;
  to: number;
  line: number;
  key: string;
  /** ``training.learning_rat`` or ``trainin`` */
  path: string;
  message: string;
}

/** Edit distance, for "did you mean". */
export function levenshtein(a: string, b: string): number {
  const prev = new Array(b.length + 1).fill(0).map((_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

/** The closest known name when it is close enough to be a typo. */
export function suggest(key: string, known: string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const k of known) {
    const d = levenshtein(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  const limit = Math.max(1, Math.floor(key.length / 3));
  return best !== null && bestD <= limit ? best : null;
}


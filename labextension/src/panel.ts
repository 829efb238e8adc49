/**
 * The main-area panel of one run: status and progress, loss curves (train and eval loss against step),
 * summary and config. Metrics are fetched incrementally (``?since=<last step>``) while the run is active.
 */
import { Widget } from '@lumino/widgets';

import { api } from './api';
import { renderChart } from './chart';
import {
  IMetricRow,
  IRunSummary,
  formatDuration,
  formatEta,
  formatLoss,
  formatProgress,
  isActive,
  lossSeries,
  mergeMetrics,
  statusBadge,
  verdictBadges
} from './model';
import { FAST_MS, RunsModel } from './runs';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string,
  parent?: HTMLElement
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

/** A YAML-looking rendering of the config (nested sections, scalars as JSON). */
export function configText(config: { [key: string]: any } | null | undefined): string {
  const lines: string[] = [];
  const walk = (obj: { [key: string]: any }, indent: string) => {
    for (const [k, v] of Object.entries(obj)) {
      if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) {
        lines.push(`${indent}${k}:`);
        walk(v, indent + '  ');
      } else {
        lines.push(`${indent}${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
      }
    }
  };
  walk(config || {}, '');
  return lines.join('\n');
}

export class RunPanel extends Widget {
  readonly runId: string;
  private _rows: IMetricRow[] = [];
  private _cursor: number | null = null;
  private _record: { [key: string]: any } | null = null;
  private _status: string | null = null;
  private _timer: number | null = null;
  private _busy = false;
  private _header: HTMLDivElement;
  private _chart: HTMLDivElement;
  private _details: HTMLDivElement;
  private _stop: HTMLButtonElement;
  private _stopRequested = false;

  constructor(runId: string, private _model: RunsModel, private _onStop: (id: string) => Promise<boolean>) {
    super();
    this.runId = runId;
    this.id = `jupyter-ft-run-${runId}`;
    this.addClass('jft-run-panel');
    this.node.dataset.runId = runId;
    this.title.label = runId;
    this.title.closable = true;
    const top = el('div', 'jft-panel-top', undefined, this.node);
    this._header = el('div', 'jft-panel-header', undefined, top);
    this._stop = el('button', 'jp-Button jp-mod-styled jp-mod-warn jft-stop', 'Stop', top);
    this._stop.addEventListener('click', () => {
      this._stop.disabled = true;
      this._stopRequested = true;
      void this._onStop(this.runId).then(ok => {
        if (!ok) {
          this._stopRequested = false;
          this._renderHeader();
        }
      });
    });
    this._chart = el('div', 'jft-panel-chart', undefined, this.node);
    this._details = el('div', 'jft-panel-details', undefined, this.node);
    this._model.changed.connect(this._onRuns, this);
    void this._tick();
  }

  dispose(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this._model.changed.disconnect(this._onRuns, this);
    super.dispose();
  }

  private get _summary(): IRunSummary | null {
    return this._model.find(this.runId) || null;
  }

  private _onRuns(): void {
    const run = this._summary;
    if (run && run.status !== this._status && this._timer === null && !this._busy) {
      void this._tick(); // it started again (resume) or ended: fetch once more
    }
    this._renderHeader();
  }

  private async _tick(): Promise<void> {
    this._timer = null;
    this._busy = true;
    try {
      const page = await api.metrics(this.runId, this._cursor);
      const merged = mergeMetrics(this._rows, page.metrics);
      this._rows = merged.rows;
      this._cursor = merged.cursor;
      const changed = page.status !== this._status || this._record === null;
      this._status = page.status;
      if (changed) {
        this._record = await api.run(this.runId);
        this.title.label = this._record.name || this.runId;
      }
    } catch (err) {
      this._details.textContent = `Could not read run ${this.runId}: ${err instanceof Error ? err.message : err}`;
      if (!this.isDisposed) {
        this._timer = window.setTimeout(() => void this._tick(), FAST_MS * 5); // the server may be back soon
      }
      return;
    } finally {
      this._busy = false;
    }
    this._render();
    if (!this.isDisposed && isActive(this._status)) {
      this._timer = window.setTimeout(() => void this._tick(), FAST_MS);
    }
  }

  private _render(): void {
    this._renderHeader();
    const { train, eval: evals } = lossSeries(this._rows);
    this._chart.replaceChildren();
    if (train.length || evals.length) {
      this._chart.appendChild(
        renderChart(
          [
            { name: 'train loss', points: train, className: 'jft-series-train' },
            { name: 'eval loss', points: evals, className: 'jft-series-eval', markers: true }
          ].filter(s => s.points.length),
          'step'
        )
      );
    } else {
      el('div', 'jft-empty', 'No loss logged yet.', this._chart);
    }
    const record = this._record || {};
    this._details.replaceChildren();
    const summary = record.summary || {};
    const facts: [string, string][] = [
      ['run id', this.runId],
      ['directory', record.path || ''],
      ['model', (record.model && record.model.name) || (record.config && record.config.model && record.config.model.name) || ''],
      ['final train loss', formatLoss(summary.final_train_loss)],
      ['best eval loss', formatLoss(summary.best_eval_loss) + (summary.best_eval_step ? ` (step ${summary.best_eval_step})` : '')],
      ['train time', formatDuration(summary.train_seconds)]
    ];
    if (record.error) {
      facts.push(['error', record.error]);
    }
    const table = el('table', 'jft-facts', undefined, this._details);
    for (const [k, v] of facts) {
      if (!v || v === '—') {
        continue;
      }
      const tr = el('tr', '', undefined, table);
      el('th', '', k, tr);
      el('td', '', v, tr);
    }
    el('h3', 'jft-config-title', 'Config', this._details);
    el('pre', 'jft-config', configText(record.config), this._details);
  }

  private _renderHeader(): void {
    const run = this._summary;
    const status = (run && run.status) || this._status || 'unknown';
    this._header.replaceChildren();
    el('span', 'jft-panel-name', (run && run.name) || (this._record && this._record.name) || this.runId, this._header);
    const badge = statusBadge(status);
    el('span', badge.className, badge.label, this._header);
    if (run) {
      const progress = formatProgress(run.progress);
      if (progress) {
        el('span', 'jft-run-progress', isActive(status) ? `${progress} · ${formatEta(run.progress)}` : progress, this._header);
      }
      for (const v of verdictBadges(run.verdicts)) {
        el('span', v.className, v.label, this._header);
      }
    }
    this._stop.style.display = isActive(status) ? '' : 'none';
    this._stop.disabled = status === 'stopping' || this._stopRequested;
  }
}

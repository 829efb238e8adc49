/**
 * The left sidebar "Fine-tuning runs": one row per run of the run store, newest first.
 */
import { Widget } from '@lumino/widgets';

import {
  IRunSummary,
  bestEvalLoss,
  formatEta,
  formatLoss,
  formatProgress,
  formatStart,
  isActive,
  progressFraction,
  statusBadge,
  verdictBadges
} from './model';
import { RunsModel } from './runs';

function div(className: string, text?: string, parent?: HTMLElement): HTMLDivElement {
  const node = document.createElement('div');
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

function span(className: string, text: string, parent: HTMLElement): HTMLSpanElement {
  const node = document.createElement('span');
  node.className = className;
  node.textContent = text;
  parent.appendChild(node);
  return node;
}

/** One run's row (exported for the run panel's header, which shows the same facts). */
export function renderRunRow(run: IRunSummary): HTMLElement {
  const row = document.createElement('li');
  row.className = 'jft-run';
  row.dataset.runId = run.id;
  row.dataset.status = run.status;
  row.tabIndex = 0;
  row.title = run.error ? `${run.id}\n${run.error}` : run.id;

  const head = div('jft-run-head', undefined, row);
  span('jft-run-name', run.name || run.id, head);
  const badge = statusBadge(run.status);
  span(badge.className, badge.label, head);

  const frac = progressFraction(run.progress);
  if (isActive(run.status) || frac !== null) {
    const bar = div('jft-progress', undefined, row);
    const fill = div('jft-progress-fill', undefined, bar);
    fill.style.width = `${Math.round((frac ?? 0) * 100)}%`;
  }
  const facts = div('jft-run-facts', undefined, row);
  const progress = formatProgress(run.progress);
  if (progress) {
    span('jft-run-progress', isActive(run.status) ? `${progress} · ${formatEta(run.progress)}` : progress, facts);
  }
  const best = bestEvalLoss(run);
  if (best !== null) {
    span('jft-run-loss', `best eval loss ${formatLoss(best)}`, facts);
  }
  const start = formatStart(run.started_at || run.created_at);
  if (start) {
    span('jft-run-start', `started ${start}`, facts);
  }
  const verdicts = verdictBadges(run.verdicts);
  if (verdicts.length) {
    const box = div('jft-run-verdicts', undefined, row);
    for (const v of verdicts) {
      span(v.className, v.label, box);
    }
  }
  if (run.status === 'failed' && run.error) {
    div('jft-run-error', run.error.split('\n')[0], row);
  }
  return row;
}

export class RunsSidebar extends Widget {
  private _list: HTMLUListElement;
  private _message: HTMLDivElement;
  private _selected: string | null = null;

  constructor(private _model: RunsModel, private _open: (id: string) => void) {
    super();
    this.id = 'jupyter-ft-runs';
    this.addClass('jft-sidebar');
    const header = div('jft-sidebar-header', undefined, this.node);
    span('jft-sidebar-title', 'Fine-tuning runs', header);
    const refresh = document.createElement('button');
    refresh.className = 'jp-Button jp-mod-minimal jft-refresh';
    refresh.title = 'Refresh';
    refresh.textContent = '⟳';
    refresh.addEventListener('click', () => void this._model.refresh());
    header.appendChild(refresh);
    this._message = div('jft-sidebar-message', undefined, this.node);
    this._list = document.createElement('ul');
    this._list.className = 'jft-run-list';
    this.node.appendChild(this._list);
    this._list.addEventListener('click', this._onClick);
    this._list.addEventListener('keydown', (ev: KeyboardEvent) => {
      if (ev.key === 'Enter') {
        this._onClick(ev);
      }
    });
    this._model.changed.connect(this._render, this);
    this._render();
  }

  set selected(id: string | null) {
    this._selected = id;
    this._render();
  }

  dispose(): void {
    this._model.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _onClick = (ev: Event): void => {
    const row = (ev.target as HTMLElement).closest('.jft-run') as HTMLElement | null;
    const id = row && row.dataset.runId;
    if (id) {
      this.selected = id;
      this._open(id);
    }
  };

  private _render(): void {
    const runs = this._model.runs;
    const error = this._model.error;
    if (error) {
      this._message.textContent = `Could not list the runs: ${error}`;
    } else if (!runs.length) {
      this._message.textContent = 'No runs yet. Start one with a %%finetune cell.';
    } else {
      this._message.textContent = '';
    }
    this._list.replaceChildren(
      ...runs.map(r => {
        const row = renderRunRow(r);
        if (r.id === this._selected) {
          row.classList.add('jft-selected');
        }
        return row;
      })
    );
  }
}

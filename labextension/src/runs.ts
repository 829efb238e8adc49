/**
 * The list of runs, shared by the sidebar and the status bar: one poll of ``GET runs``, fast while a run
 * is active (or a panel asked for it), slow otherwise, paused while the page is hidden.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { api } from './api';
import { IRunSummary, activeRun, isActive } from './model';

export const FAST_MS = 2000;
export const SLOW_MS = 10000;

export class RunsModel {
  private _runs: IRunSummary[] = [];
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
  private _timer: number | null = null;
  private _disposed = false;
  private _inflight: Promise<void> | null = null;

  get runs(): IRunSummary[] {
    return this._runs;
  }

  /** The message of the last failed poll (server extension missing, server down), else null. */
  get error(): string | null {
    return this._error;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get active(): IRunSummary | null {
    return activeRun(this._runs);
  }

  find(id: string): IRunSummary | undefined {
    return this._runs.find(r => r.id === id);
  }

  /** Fetch now (coalesced with a fetch already under way), then schedule the next poll. */
  refresh(): Promise<void> {
    if (this._inflight) {
      return this._inflight;
    }
    this._inflight = this._fetch().finally(() => {
      this._inflight = null;
      this._schedule();
    });
    return this._inflight;
  }

  start(): void {
    void this.refresh();
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    Signal.clearData(this);
  }

  private async _fetch(): Promise<void> {
    try {
      const reply = await api.runs();
      this._runs = reply.runs || [];
      this._error = null;
    } catch (err) {
      this._error = err instanceof Error ? err.message : String(err);
    }
    this._changed.emit();
  }

  private _schedule(): void {
    if (this._disposed) {
      return;
    }
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    const fast = this._runs.some(r => isActive(r.status));
    const delay = document.hidden ? SLOW_MS * 3 : fast ? FAST_MS : SLOW_MS;
    this._timer = window.setTimeout(() => {
      this._timer = null;
      void this.refresh();
    }, delay);
  }
}

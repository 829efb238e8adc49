/**
 * The status bar item: the active run's progress and ETA; a click opens its panel.
 */
import { Widget } from '@lumino/widgets';

import { progressFraction, statusBarText } from './model';
import { RunsModel } from './runs';

export class RunStatusItem extends Widget {
  private _text: HTMLSpanElement;
  private _bar: HTMLSpanElement;

  constructor(private _model: RunsModel, private _open: (id: string) => void) {
    super();
    this.addClass('jft-statusbar');
    this.node.title = 'Fine-tuning run: click to open it';
    this._bar = document.createElement('span');
    this._bar.className = 'jft-statusbar-bar';
    const fill = document.createElement('span');
    fill.className = 'jft-statusbar-fill';
    this._bar.appendChild(fill);
    this._text = document.createElement('span');
    this._text.className = 'jft-statusbar-text';
    this.node.append(this._bar, this._text);
    this.node.addEventListener('click', () => {
      const run = this._model.active;
      if (run) {
        this._open(run.id);
      }
    });
    this._model.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    this._model.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(): void {
    const run = this._model.active;
    this.node.dataset.runId = run ? run.id : '';
    this.node.dataset.status = run ? run.status : '';
    this._text.textContent = statusBarText(run);
    const frac = run ? progressFraction(run.progress) : null;
    this._bar.style.display = frac === null ? 'none' : '';
    (this._bar.firstChild as HTMLElement).style.width = `${Math.round((frac ?? 0) * 100)}%`;
    this.node.style.display = run ? '' : 'none';
  }
}

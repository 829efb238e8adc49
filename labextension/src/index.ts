/**
 * jupyter-ft for JupyterLab 4: the "Fine-tuning runs" sidebar, one panel per run, a status bar item for
 * the active run, YAML highlighting of %%finetune cells, palette commands, and the receiving end of the
 * form's "Copy as %%finetune" button (a new cell below it). Everything reads the run store through the
 * jupyter-ft server extension; without it the sidebar says so and the rest of the lab is unaffected.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, showErrorMessage } from '@jupyterlab/apputils';
import { EditorExtensionRegistry, IEditorExtensionRegistry, IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { api } from './api';
import { finetuneExtension } from './finetuneyaml';
import { ISchema } from './model';
import { RunPanel } from './panel';
import { RunsModel } from './runs';
import { RunsSidebar } from './sidebar';
import { RunStatusItem } from './statusbar';

/** The DOM event the form's "Copy as %%finetune" button dispatches (jupyter_ft/widgets/clipboard.py, static/clipboard.js). */
export const INSERT_CELL_EVENT = 'jupyter-ft:insert-cell';

export namespace CommandIDs {
  export const openRuns = 'jupyter-ft:open-runs';
  export const openRun = 'jupyter-ft:open-run';
  export const stopActive = 'jupyter-ft:stop-active-run';
  export const refresh = 'jupyter-ft:refresh-runs';
}

const runsIcon = new LabIcon({
  name: 'jupyter-ft:runs',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">' +
    '<path class="jp-icon3" fill="#616161" d="M3 3h2v16h16v2H3zm4 12 4-5 3 3 5-7 1.6 1.2L14.3 16l-3-3-2.7 3.4z"/></svg>'
});

/** Insert the event's text as a new code cell below the cell that holds the button (else the active cell). */
function insertCell(tracker: INotebookTracker, ev: Event): void {
  const detail = (ev as CustomEvent).detail || {};
  const text: unknown = detail.text;
  if (typeof text !== 'string' || !text) {
    return;
  }
  const target = ev.target instanceof Node ? ev.target : null;
  const panel = (target && tracker.find(p => p.node.contains(target))) || tracker.currentWidget;
  if (!panel) {
    return;
  }
  const notebook = panel.content;
  const index = target ? notebook.widgets.findIndex(c => c.node.contains(target)) : -1;
  if (index >= 0) {
    notebook.activeCellIndex = index;
  }
  NotebookActions.insertBelow(notebook);
  if (notebook.activeCell && notebook.activeCell.model.type !== 'code') {
    NotebookActions.changeCellType(notebook, 'code');
  }
  const cell = notebook.activeCell;
  if (!cell) {
    return;
  }
  cell.model.sharedModel.setSource(text);
  ev.preventDefault(); // tells the button that a cell was written
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-ft:plugin',
  description: 'Fine-tuning runs sidebar, status bar item and %%finetune highlighting for jupyter-ft.',
  autoStart: true,
  optional: [
    ILayoutRestorer,
    ICommandPalette,
    IStatusBar,
    INotebookTracker,
    IEditorExtensionRegistry,
    IEditorLanguageRegistry
  ],
  activate: async (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    notebooks: INotebookTracker | null,
    editorExtensions: IEditorExtensionRegistry | null,
    languages: IEditorLanguageRegistry | null
  ) => {
    const model = new RunsModel();
    const panels = new Map<string, MainAreaWidget<RunPanel>>();

    const stopRun = async (id: string): Promise<boolean> => {
      try {
        await api.stop(id);
      } catch (err) {
        void showErrorMessage('Could not stop the run', err instanceof Error ? err.message : String(err));
        return false;
      }
      void model.refresh();
      return true;
    };

    const openRun = (id: string): void => {
      let widget = panels.get(id);
      if (!widget || widget.isDisposed) {
        const content = new RunPanel(id, model, stopRun);
        widget = new MainAreaWidget({ content });
        widget.id = `jupyter-ft-run-main-${id}`;
        widget.title.label = model.find(id)?.name || id;
        widget.title.caption = `Fine-tuning run ${id}`;
        widget.title.icon = runsIcon;
        widget.title.closable = true;
        content.title.changed.connect(() => {
          widget!.title.label = content.title.label;
        });
        panels.set(id, widget);
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
      sidebar.selected = id;
    };

    const sidebar = new RunsSidebar(model, openRun);
    sidebar.title.icon = runsIcon;
    sidebar.title.caption = 'Fine-tuning runs';
    app.shell.add(sidebar, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(sidebar, 'jupyter-ft-runs');
    }

    app.commands.addCommand(CommandIDs.openRuns, {
      label: 'Fine-tuning: Open Runs Panel',
      caption: 'Show the list of fine-tuning runs',
      execute: () => {
        app.shell.activateById(sidebar.id);
        return model.refresh();
      }
    });
    app.commands.addCommand(CommandIDs.openRun, {
      label: args => (args.id ? `Fine-tuning: Open Run ${args.id}` : 'Fine-tuning: Open Active Run'),
      execute: args => {
        const id = (args.id as string) || model.active?.id;
        if (id) {
          openRun(id);
        }
      }
    });
    app.commands.addCommand(CommandIDs.stopActive, {
      label: () => {
        const run = model.active;
        return run ? `Fine-tuning: Stop Active Run (${run.name})` : 'Fine-tuning: Stop Active Run';
      },
      caption: 'Ask the active run to stop after its current step (it saves a checkpoint)',
      isEnabled: () => model.active !== null && model.active.status !== 'stopping',
      execute: async () => {
        const run = model.active;
        if (run) {
          await stopRun(run.id);
        }
      }
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Fine-tuning: Refresh Runs',
      execute: () => model.refresh()
    });
    if (palette) {
      for (const command of [CommandIDs.openRuns, CommandIDs.stopActive, CommandIDs.refresh]) {
        palette.addItem({ command, category: 'Fine-tuning' });
      }
    }
    model.changed.connect(() => app.commands.notifyCommandChanged(CommandIDs.stopActive));

    if (statusBar) {
      const item = new RunStatusItem(model, openRun);
      statusBar.registerStatusItem('jupyter-ft:status', {
        item,
        align: 'left',
        rank: 5,
        isActive: () => model.active !== null,
        activeStateChanged: model.changed
      });
    }

    if (notebooks) {
      document.addEventListener(INSERT_CELL_EVENT, ev => insertCell(notebooks, ev));
    }

    model.start();

    if (editorExtensions && languages) {
      const [yaml, schema] = await Promise.all([
        languages.getLanguage('yaml').catch(() => null),
        api.schema().catch((): ISchema | null => null)
      ]);
      if (yaml && yaml.support) {
        const extension = finetuneExtension(yaml.support.language, () => schema);
        editorExtensions.addExtension({
          name: 'jupyter-ft:finetune-yaml',
          factory: () => EditorExtensionRegistry.createImmutableExtension(extension)
        });
      } else {
        console.warn('jupyter-ft: no YAML language in the editor registry; %%finetune cells stay Python');
      }
    }
  }
};

export default plugin;

/**
 * Every action of the panel as a JupyterLab command, so buttons, the context
 * menu, the palette and other extensions share one implementation. Commands
 * take the cluster's `name` as an argument; without one (palette) they act on
 * the selected cluster, or the only one. They report failures as notifications
 * (unless `notify: false`, used by the form, which shows errors inline) and
 * re-throw so callers can react.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import {
  Clipboard,
  Dialog,
  InputDialog,
  Notification,
  WidgetTracker,
  showDialog
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { TranslationBundle } from '@jupyterlab/translation';
import { addIcon, refreshIcon } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import {
  DaskLabHandOff,
  HandOffResult,
  hasDaskLab as commandsHaveDaskLab,
  waitForDaskLabDashboard
} from './dasklab';
import { isSameOrigin, openDashboardTab } from './dashboard';
import { connectionCode } from './format';
import { ClusterLogsModel } from './logs';
import { ClusterLogsWidget } from './logview';
import { GatewayModel } from './model';
import { GatewaySidebar, gatewayIcon } from './sidebar';
import {
  CommandIDs,
  DaskLabCommandIDs,
  IClusterInfo,
  PLUGIN_ID
} from './tokens';

/** How long "Show in dask-labextension" waits for it to reach the dashboard (ms). */
export const DASK_LAB_DASHBOARD_TIMEOUT = 30_000;

export interface ICommandContext {
  app: JupyterFrontEnd;
  model: GatewayModel;
  sidebar: GatewaySidebar;
  trans: TranslationBundle;
  notebooks: INotebookTracker | null;
  settingRegistry: ISettingRegistry | null;
  /** The open Logs views (for the layout restorer); one is made when not given. */
  logs?: WidgetTracker<ClusterLogsWidget>;
  /** Current values of the settings that change what commands do. */
  settings: () => {
    confirmStop: boolean;
    handOffToDaskLabextension: boolean;
    daskLabextensionBrowserCheck: boolean;
  };
}

/** Whether dask-labextension is loaded (it exports no token, but its commands exist). */
export function hasDaskLab(app: JupyterFrontEnd): boolean {
  return commandsHaveDaskLab(app.commands);
}

/** The cluster a command acts on: its argument, the right-clicked card, the selection, or the only one. */
function targetCluster(
  ctx: ICommandContext,
  args: ReadonlyPartialJSONObject
): IClusterInfo | undefined {
  const { model, app } = ctx;
  let name = typeof args.name === 'string' ? args.name : undefined;
  if (!name) {
    const node = app.contextMenuHitTest(
      n => n.dataset?.clusterName !== undefined
    );
    name = node?.dataset.clusterName;
  }
  if (name) {
    // a name the list has not caught up with yet (just created) still works
    return model.cluster(name) ?? ({ name, status: 'PENDING' } as IClusterInfo);
  }
  if (model.selected) {
    return model.cluster(model.selected);
  }
  const active = model.clusters.filter(c => c.status === 'RUNNING');
  return active.length === 1 ? active[0] : undefined;
}

function absolute(url: string): string {
  return new URL(url, window.location.href).href;
}

export function addCommands(ctx: ICommandContext): void {
  const { app, model, sidebar, trans, notebooks } = ctx;
  const { commands, shell } = app;
  const logs =
    ctx.logs ??
    new WidgetTracker<ClusterLogsWidget>({ namespace: 'dask-gateway-logs' });

  /** Run an action; show its failure unless the caller shows it; rethrow. */
  const report = async <T>(
    args: ReadonlyPartialJSONObject,
    what: string,
    action: () => Promise<T>
  ): Promise<T> => {
    try {
      return await action();
    } catch (error) {
      if (args.notify !== false) {
        Notification.error(`${what}: ${(error as Error).message}`, {
          autoClose: 8000
        });
      }
      throw error;
    }
  };

  const needsCluster = (args: ReadonlyPartialJSONObject) =>
    targetCluster(ctx, args) !== undefined;
  const needsDashboard = (args: ReadonlyPartialJSONObject) =>
    !!targetCluster(ctx, args)?.dashboard_url;

  commands.addCommand(CommandIDs.open, {
    label: trans.__('Show Dask Gateway Clusters'),
    icon: gatewayIcon,
    execute: () => shell.activateById(sidebar.id)
  });

  commands.addCommand(CommandIDs.refresh, {
    label: args =>
      args.toolbar ? '' : trans.__('Refresh Dask Gateway Clusters'),
    caption: trans.__('Refresh the cluster list'),
    icon: refreshIcon,
    execute: () => model.refresh()
  });

  commands.addCommand(CommandIDs.newCluster, {
    label: args =>
      args.toolbar ? trans.__('New') : trans.__('New Dask Gateway Cluster…'),
    caption: trans.__('Create a Dask cluster from the options form'),
    icon: addIcon,
    execute: () => {
      shell.activateById(sidebar.id);
      sidebar.formOpen = true;
    }
  });

  commands.addCommand(CommandIDs.createCluster, {
    label: trans.__('Create Dask Gateway Cluster with Default Options'),
    caption: trans.__('Create a cluster; args: {options}'),
    execute: args =>
      report(args, trans.__('Cannot create a cluster'), async () => {
        const options = (args.options ?? {}) as Record<string, unknown>;
        const name = await model.create(options);
        Notification.success(trans.__('Cluster %1 is starting.', name), {
          autoClose: 4000
        });
        return name;
      })
  });

  commands.addCommand(CommandIDs.scale, {
    label: trans.__('Scale Dask Gateway Cluster…'),
    caption: trans.__('Set the number of workers; args: {name, count}'),
    isEnabled: needsCluster,
    execute: async args => {
      const cluster = targetCluster(ctx, args);
      if (!cluster) {
        return;
      }
      let count = typeof args.count === 'number' ? args.count : undefined;
      if (count === undefined) {
        const result = await InputDialog.getNumber({
          title: trans.__('Scale cluster %1', cluster.name),
          label: trans.__('Workers'),
          value: cluster.target_workers ?? cluster.workers ?? 0
        });
        if (!result.button.accept || result.value === null) {
          return;
        }
        count = result.value;
      }
      if (!Number.isInteger(count) || count < 0) {
        Notification.error(trans.__('Workers must be a whole number ≥ 0'));
        return;
      }
      const reply = await report(args, trans.__('Cannot scale'), () =>
        model.scale(cluster.name, count!)
      );
      if (!reply.ok && reply.msg) {
        Notification.warning(reply.msg, { autoClose: 8000 });
      }
      return reply;
    }
  });

  commands.addCommand(CommandIDs.adapt, {
    label: trans.__('Make Dask Gateway Cluster Adaptive…'),
    caption: trans.__(
      'Scale between a minimum and a maximum with the load; args: {name, minimum, maximum}'
    ),
    isEnabled: needsCluster,
    execute: async args => {
      const cluster = targetCluster(ctx, args);
      if (!cluster) {
        return;
      }
      let minimum = typeof args.minimum === 'number' ? args.minimum : undefined;
      let maximum = typeof args.maximum === 'number' ? args.maximum : undefined;
      if (minimum === undefined || maximum === undefined) {
        const lo = await InputDialog.getNumber({
          title: trans.__('Adaptive cluster %1', cluster.name),
          label: trans.__('Minimum workers'),
          value: cluster.adaptive?.minimum ?? 0
        });
        if (!lo.button.accept || lo.value === null) {
          return;
        }
        const hi = await InputDialog.getNumber({
          title: trans.__('Adaptive cluster %1', cluster.name),
          label: trans.__('Maximum workers'),
          value: cluster.adaptive?.maximum ?? Math.max(lo.value, 1)
        });
        if (!hi.button.accept || hi.value === null) {
          return;
        }
        minimum = lo.value;
        maximum = hi.value;
      }
      if (
        !Number.isInteger(minimum) ||
        !Number.isInteger(maximum) ||
        minimum < 0 ||
        minimum > maximum
      ) {
        Notification.error(
          trans.__(
            'The minimum and maximum must be whole numbers ≥ 0, minimum ≤ maximum'
          )
        );
        return;
      }
      const reply = await report(args, trans.__('Cannot adapt'), () =>
        model.adapt(cluster.name, minimum!, maximum!)
      );
      if (!reply.ok && reply.msg) {
        Notification.warning(reply.msg, { autoClose: 8000 });
      }
      return reply;
    }
  });

  commands.addCommand(CommandIDs.stop, {
    label: trans.__('Stop Dask Gateway Cluster…'),
    caption: trans.__('Stop the cluster and its workers; args: {name}'),
    isEnabled: needsCluster,
    execute: async args => {
      const cluster = targetCluster(ctx, args);
      if (!cluster) {
        return;
      }
      if (ctx.settings().confirmStop && args.confirm !== false) {
        const user = model.config?.user ?? null;
        const othersCluster =
          !!cluster.owner && !!user && cluster.owner !== user;
        const result = await showDialog({
          title: trans.__('Stop cluster?'),
          body: othersCluster
            ? trans.__(
                "Stop %1's cluster %2? Its scheduler and workers shut down and any results held in memory are lost.",
                cluster.owner,
                cluster.name
              )
            : trans.__(
                'Stop cluster %1? Its scheduler and workers shut down and any results held in memory are lost.',
                cluster.name
              ),
          buttons: [
            Dialog.cancelButton({ label: trans.__('Cancel') }),
            Dialog.warnButton({ label: trans.__('Stop') })
          ]
        });
        if (!result.button.accept) {
          return false;
        }
      }
      await report(args, trans.__('Cannot stop the cluster'), () =>
        model.stop(cluster.name)
      );
      return true;
    }
  });

  const daskLab = new DaskLabHandOff(app);
  const handOff = (url: string): Promise<HandOffResult> =>
    daskLab.handOff(absolute(url), {
      browserCheck: ctx.settings().daskLabextensionBrowserCheck,
      settingRegistry: ctx.settingRegistry
    });

  commands.addCommand(CommandIDs.openDashboard, {
    label: trans.__('Open Dask Dashboard in a New Tab'),
    caption: trans.__("Open the cluster's dashboard (through the Hub)"),
    isEnabled: needsDashboard,
    execute: async args => {
      const cluster = targetCluster(ctx, args);
      if (!cluster?.dashboard_url) {
        return;
      }
      const url = absolute(cluster.dashboard_url);
      const { handOffToDaskLabextension, daskLabextensionBrowserCheck } =
        ctx.settings();
      const handingOff = handOffToDaskLabextension && hasDaskLab(app);
      // Still within the click (no await above), so the pop-up is allowed.
      // dask-labextension's browser-side check and the tab would both start
      // the Hub's login to a dashboard on its origin: one login first.
      await openDashboardTab(
        url,
        handingOff && daskLabextensionBrowserCheck && isSameOrigin(url)
      );
      // what dask-labextension did with it, for callers of the command
      let daskLabextension: HandOffResult | 'off' = 'off';
      if (handOffToDaskLabextension) {
        daskLabextension = await handOff(cluster.dashboard_url);
      }
      return { url, daskLabextension };
    }
  });

  commands.addCommand(CommandIDs.showInDaskLab, {
    label: trans.__('Show Dask Dashboard Panes in JupyterLab'),
    caption: trans.__(
      "Point dask-labextension's dashboard panes at this cluster"
    ),
    isVisible: () => hasDaskLab(app),
    isEnabled: args => hasDaskLab(app) && needsDashboard(args),
    execute: async args => {
      const cluster = targetCluster(ctx, args);
      if (!cluster?.dashboard_url) {
        return false;
      }
      const result = await handOff(cluster.dashboard_url);
      if (result === 'unavailable') {
        return false;
      }
      if (result === 'failed') {
        Notification.warning(
          trans.__(
            'dask-labextension did not take the dashboard address; paste it into its sidebar.'
          ),
          { autoClose: 8000 }
        );
        return false;
      }
      if (!commands.hasCommand(DaskLabCommandIDs.launchLayout)) {
        return true;
      }
      // dask-labextension checks the URL in the background (slow under load or
      // behind a busy proxy); its layout command is enabled once the dashboard
      // answered. Say what is happening if it takes a while.
      let waiting: string | undefined;
      const slow = setTimeout(() => {
        waiting = Notification.emit(
          trans.__('Waiting for the dashboard of cluster %1…', cluster.name),
          'in-progress',
          { autoClose: false }
        );
      }, 1500);
      const reached = await waitForDaskLabDashboard(
        commands,
        DASK_LAB_DASHBOARD_TIMEOUT
      );
      clearTimeout(slow);
      if (waiting) {
        Notification.dismiss(waiting);
      }
      if (!reached) {
        Notification.warning(
          trans.__(
            'dask-labextension could not reach the dashboard yet; use its sidebar to open panes.'
          ),
          { autoClose: 8000 }
        );
        return false;
      }
      await commands.execute(DaskLabCommandIDs.launchLayout);
      return true;
    }
  });

  commands.addCommand(CommandIDs.showLogs, {
    label: trans.__('Show Dask Gateway Cluster Logs'),
    caption: trans.__(
      "Open the cluster's events and its processes' logs; args: {name}"
    ),
    isEnabled: needsCluster,
    execute: args => {
      const cluster = targetCluster(ctx, args);
      if (!cluster) {
        return;
      }
      const name = cluster.name;
      let widget = logs.find(w => w.model.name === name);
      if (!widget) {
        widget = new ClusterLogsWidget({
          model: new ClusterLogsModel({
            api: model.api,
            name,
            info: () => model.cluster(name)
          }),
          trans
        });
        void logs.add(widget);
        shell.add(widget, 'main');
      } else {
        // reopened: show what is new since
        void widget.model.refresh();
      }
      shell.activateById(widget.id);
      return widget;
    }
  });

  commands.addCommand(CommandIDs.toggleAllUsers, {
    label: trans.__("Show Every User's Dask Clusters"),
    caption: trans.__(
      "Admins: list all users' clusters, with their owners, not only yours"
    ),
    isVisible: () => model.isAdmin,
    isEnabled: () => model.isAdmin,
    isToggled: () => model.allUsers,
    execute: args => {
      if (!model.isAdmin) {
        return;
      }
      const value =
        typeof args.value === 'boolean' ? args.value : !model.showAll;
      model.showAll = value;
      // the setting keeps the choice across reloads
      void ctx.settingRegistry
        ?.set(PLUGIN_ID, 'showAllClusters', value)
        .catch(reason =>
          console.warn(`Cannot save the setting showAllClusters`, reason)
        );
      return value;
    }
  });

  commands.addCommand(CommandIDs.insertCode, {
    label: trans.__('Insert Dask Gateway Connection Code'),
    caption: trans.__(
      'Add a cell that connects to the cluster to the active notebook'
    ),
    isEnabled: needsCluster,
    execute: async args => {
      const cluster = targetCluster(ctx, args);
      if (!cluster) {
        return;
      }
      const code = connectionCode(cluster.name);
      const panel = notebooks?.currentWidget;
      if (!panel) {
        Clipboard.copyToSystem(code);
        Notification.info(
          trans.__(
            'No notebook is open; the code was copied to the clipboard.'
          ),
          { autoClose: 5000 }
        );
        return;
      }
      // a notebook still loading from disk would replace what we insert
      await panel.context.ready;
      const notebook = panel.content;
      const active = notebook.activeCell;
      // reuse an empty code cell rather than leaving it behind
      const reuse =
        active !== null &&
        active.model.type === 'code' &&
        active.model.sharedModel.getSource().trim() === '';
      if (!reuse) {
        NotebookActions.insertBelow(notebook);
      }
      notebook.activeCell?.model.sharedModel.setSource(code);
      shell.activateById(panel.id);
      return code;
    }
  });
}

/** Palette entries (category "Dask Gateway") and the cluster cards' context menu. */
export function addMenus(
  app: JupyterFrontEnd,
  trans: TranslationBundle,
  palette: {
    addItem(options: { command: string; category: string }): unknown;
  } | null
): void {
  const category = trans.__('Dask Gateway');
  const ids = [
    CommandIDs.open,
    CommandIDs.refresh,
    CommandIDs.newCluster,
    CommandIDs.createCluster,
    CommandIDs.scale,
    CommandIDs.adapt,
    CommandIDs.stop,
    CommandIDs.openDashboard,
    CommandIDs.showInDaskLab,
    CommandIDs.insertCode,
    CommandIDs.showLogs,
    CommandIDs.toggleAllUsers
  ];
  if (palette) {
    for (const command of ids) {
      palette.addItem({ command, category });
    }
  }
  const selector = '.jp-DaskGateway-cluster';
  [
    CommandIDs.insertCode,
    CommandIDs.openDashboard,
    CommandIDs.showInDaskLab,
    CommandIDs.showLogs,
    CommandIDs.scale,
    CommandIDs.adapt,
    CommandIDs.stop
  ].forEach((command, rank) =>
    app.contextMenu.addItem({ command, selector, rank })
  );
}

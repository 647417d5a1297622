/**
 * The JupyterLab plugin: creates the model (talking to the server extension's
 * relay), the left-sidebar panel and the commands, applies the user's settings,
 * and provides `IDaskGatewayModel` to other extensions. Everything optional
 * (palette, settings, translations, notebooks, layout restorer, dask-labextension)
 * is used when present.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, WidgetTracker } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { GatewayAPI } from './api';
import { addCommands, addMenus, hasDaskLab } from './commands';
import { ClusterLogsWidget } from './logview';
import { GatewayModel } from './model';
import { GatewaySidebar } from './sidebar';
import {
  CommandIDs,
  IDaskGatewayModel,
  PLUGIN_ID,
  TRANSLATION_DOMAIN
} from './tokens';

export * from './tokens';
export { GatewayAPI, GatewayAPIError, requestAPI } from './api';
export { GatewayModel } from './model';
export { ClusterLogsModel } from './logs';

interface ISettings {
  refreshInterval: number;
  maxRefreshInterval: number;
  showAllClusters: boolean;
  confirmStop: boolean;
  handOffToDaskLabextension: boolean;
  daskLabextensionBrowserCheck: boolean;
}

const DEFAULTS: ISettings = {
  refreshInterval: 5,
  maxRefreshInterval: 60,
  showAllClusters: false,
  confirmStop: true,
  handOffToDaskLabextension: true,
  daskLabextensionBrowserCheck: true
};

const plugin: JupyterFrontEndPlugin<IDaskGatewayModel> = {
  id: PLUGIN_ID,
  description:
    'A sidebar for the Dask clusters of the JupyterHub Dask Gateway.',
  autoStart: true,
  provides: IDaskGatewayModel,
  optional: [
    ICommandPalette,
    ISettingRegistry,
    ITranslator,
    INotebookTracker,
    ILayoutRestorer
  ],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null,
    notebooks: INotebookTracker | null,
    restorer: ILayoutRestorer | null
  ): IDaskGatewayModel => {
    const trans = (translator ?? nullTranslator).load(TRANSLATION_DOMAIN);
    const settings: ISettings = { ...DEFAULTS };
    const model = new GatewayModel({
      api: new GatewayAPI(app.serviceManager.serverSettings),
      refreshInterval: settings.refreshInterval,
      maxRefreshInterval: settings.maxRefreshInterval
    });
    const sidebar = new GatewaySidebar({
      model,
      commands: app.commands,
      trans,
      translator: translator ?? undefined,
      daskLab: () => hasDaskLab(app)
    });
    app.shell.add(sidebar, 'left', { rank: 210 });
    restorer?.add(sidebar, sidebar.id);

    const logs = new WidgetTracker<ClusterLogsWidget>({
      namespace: 'dask-gateway-logs'
    });
    addCommands({
      app,
      model,
      sidebar,
      trans,
      notebooks,
      settingRegistry,
      logs,
      settings: () => settings
    });
    addMenus(app, trans, palette);
    // Logs views open at the last reload come back
    void restorer?.restore(logs, {
      command: CommandIDs.showLogs,
      args: widget => ({ name: widget.model.name }),
      name: widget => widget.model.name
    });

    // dask-labextension may activate after us; show its button once it is there
    void app.restored.then(() => sidebar.refreshView());

    if (settingRegistry) {
      const apply = (loaded: ISettingRegistry.ISettings) => {
        for (const key of Object.keys(DEFAULTS) as (keyof ISettings)[]) {
          (settings as any)[key] = loaded.get(key).composite ?? DEFAULTS[key];
        }
        model.setFrequency(
          settings.refreshInterval,
          settings.maxRefreshInterval
        );
        model.showAll = settings.showAllClusters;
        sidebar.refreshView();
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(loaded => {
          apply(loaded);
          loaded.changed.connect(apply);
        })
        .catch(reason =>
          console.warn(`Cannot load settings of ${PLUGIN_ID}`, reason)
        );
    }
    return model;
  }
};

export default plugin;

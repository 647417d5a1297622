/**
 * A cluster's Logs view as a main-area tab: a `MainAreaWidget` whose toolbar has
 * Refresh and the process and length choosers, and whose content is the React body
 * (`components/logs.tsx`) over a `ClusterLogsModel`. It loads when first shown; the
 * `dask-gateway:show-logs` command opens (or brings back) one per cluster, and a
 * `WidgetTracker` lets the layout restorer reopen them.
 */

import * as React from 'react';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import {
  ReactWidget,
  ToolbarButton,
  refreshIcon
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';

import { ClusterLogs, LogsControls } from './components/logs';
import { shortName } from './format';
import { ClusterLogsModel } from './logs';
import { gatewayIcon } from './sidebar';

class LogsBody extends ReactWidget {
  constructor(
    readonly model: ClusterLogsModel,
    private _trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-DaskGateway-logs-body');
  }

  render(): JSX.Element {
    return <ClusterLogs model={this.model} trans={this._trans} />;
  }
}

export class ClusterLogsWidget extends MainAreaWidget<LogsBody> {
  constructor(options: ClusterLogsWidget.IOptions) {
    const { model, trans } = options;
    super({ content: new LogsBody(model, trans) });
    this.id = ClusterLogsWidget.idFor(model.name);
    this.addClass('jp-DaskGateway-logs-widget');
    this.title.icon = gatewayIcon;
    this.title.label = trans.__('Logs %1', shortName(model.name));
    this.title.caption = trans.__('Events and logs of cluster %1', model.name);
    this.title.closable = true;

    const refresh = new ToolbarButton({
      icon: refreshIcon,
      label: trans.__('Refresh'),
      tooltip: trans.__('Load the events and the log again'),
      onClick: () => void model.refresh()
    });
    this.toolbar.addItem('refresh', refresh);
    this.toolbar.addItem(
      'controls',
      ReactWidget.create(<LogsControls model={model} trans={trans} />)
    );
  }

  get model(): ClusterLogsModel {
    return this.content.model;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    const model = this.content.model;
    super.dispose();
    model.dispose();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.model.state === 'loading' && !this.model.busy) {
      void this.model.refresh();
    }
  }
}

export namespace ClusterLogsWidget {
  export interface IOptions {
    model: ClusterLogsModel;
    trans: TranslationBundle;
  }

  /** The widget id of a cluster's Logs view (one per cluster). */
  export function idFor(name: string): string {
    return `jupyterhub-dask-gateway-logs-${name}`;
  }
}

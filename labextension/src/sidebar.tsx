/**
 * The left-sidebar widget: a `SidePanel` with a toolbar (new cluster, refresh)
 * and a React body (`components/panel.tsx`). It tells the model when it is shown
 * or hidden, so polling stands by while nobody looks, and holds the one piece of
 * view state the model has no business with: whether the new-cluster form is open.
 */

import * as React from 'react';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { ITranslator, TranslationBundle } from '@jupyterlab/translation';
import {
  CommandToolbarButton,
  LabIcon,
  ReactWidget,
  SidePanel
} from '@jupyterlab/ui-components';

import { GatewayPanel } from './components/panel';
import { GatewayModel } from './model';
import { CommandIDs } from './tokens';

import gatewaySvg from '../style/icons/gateway.svg';

export const gatewayIcon = new LabIcon({
  name: 'jupyterhub-dask-gateway:icon',
  svgstr: gatewaySvg
});

class PanelBody extends ReactWidget {
  constructor(
    private _options: GatewaySidebar.IOptions,
    private _sidebar: GatewaySidebar
  ) {
    super();
    this.addClass('jp-DaskGateway-panel');
  }

  render(): JSX.Element {
    const { model, commands, trans } = this._options;
    return (
      <GatewayPanel
        model={model}
        commands={commands}
        trans={trans}
        formOpen={this._sidebar.formOpen}
        onCloseForm={() => (this._sidebar.formOpen = false)}
        daskLab={this._options.daskLab()}
      />
    );
  }
}

export class GatewaySidebar extends SidePanel {
  constructor(options: GatewaySidebar.IOptions) {
    super({ translator: options.translator });
    const { trans, commands, model } = options;
    this._model = model;
    this.id = 'jupyterhub-dask-gateway-sidebar';
    this.addClass('jp-DaskGateway-sidebar');
    this.title.icon = gatewayIcon;
    this.title.caption = trans.__('Dask Gateway');
    this.title.label = '';

    this.header.addWidget(
      ReactWidget.create(
        <h2 className="jp-DaskGateway-title">{trans.__('Dask Gateway')}</h2>
      )
    );
    for (const id of [CommandIDs.newCluster, CommandIDs.refresh]) {
      this.toolbar.addItem(
        id,
        new CommandToolbarButton({ commands, id, args: { toolbar: true } })
      );
    }
    this._body = new PanelBody(options, this);
    this._body.title.label = trans.__('Clusters');
    this.addWidget(this._body);
  }

  get model(): GatewayModel {
    return this._model;
  }

  /** Whether the new-cluster form shows. */
  get formOpen(): boolean {
    return this._formOpen;
  }

  set formOpen(open: boolean) {
    this._formOpen = open;
    this._body.update();
  }

  /** Re-render, e.g. when dask-labextension's presence or a setting changed. */
  refreshView(): void {
    this._body.update();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._model.visible = true;
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._model.visible = false;
  }

  private _body: PanelBody;
  private _formOpen = false;
  private _model: GatewayModel;
}

export namespace GatewaySidebar {
  export interface IOptions {
    model: GatewayModel;
    commands: CommandRegistry;
    trans: TranslationBundle;
    translator?: ITranslator;
    /** Whether dask-labextension is installed (checked on each render). */
    daskLab: () => boolean;
  }
}

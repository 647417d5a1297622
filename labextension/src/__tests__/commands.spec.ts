/**
 * The Logs and All-users commands over a real model and a fake transport: one Logs
 * tab per cluster (reopening brings it back), and the All-users switch only for admins,
 * saved in the settings.
 */

import { CommandRegistry } from '@lumino/commands';
import { nullTranslator } from '@jupyterlab/translation';

import { GatewayAPI } from '../api';
import { addCommands } from '../commands';
import { ClusterLogsWidget } from '../logview';
import { GatewayModel } from '../model';
import { CommandIDs, PLUGIN_ID } from '../tokens';
import { FakeRelay, cluster } from './fakeRelay';

const trans = nullTranslator.load('jupyterhub_dask_gateway');
const NAME = '0123456789abcdef0123456789abcdef';

function setup(relay: FakeRelay) {
  const model = new GatewayModel({
    api: new GatewayAPI(relay.settings()),
    refreshInterval: 3600,
    autoStart: false
  });
  model.visible = true;
  const commands = new CommandRegistry();
  const added: [any, string][] = [];
  const activated: string[] = [];
  const saved: [string, string, unknown][] = [];
  const app: any = {
    commands,
    shell: {
      add: (widget: any, area: string) => added.push([widget, area]),
      activateById: (id: string) => activated.push(id)
    },
    contextMenuHitTest: () => undefined
  };
  addCommands({
    app,
    model,
    sidebar: { id: 'gateway-sidebar' } as any,
    trans,
    notebooks: null,
    settingRegistry: {
      set: async (plugin: string, key: string, value: unknown) => {
        saved.push([plugin, key, value]);
      }
    } as any,
    settings: () => ({
      confirmStop: false,
      handOffToDaskLabextension: false,
      daskLabextensionBrowserCheck: false
    })
  });
  return { model, commands, added, activated, saved };
}

describe('show-logs', () => {
  it('opens one Logs tab per cluster in the main area', async () => {
    const relay = new FakeRelay();
    relay.clusters = [cluster(NAME)];
    const { model, commands, added, activated } = setup(relay);
    await model.refresh();
    const widget = (await commands.execute(CommandIDs.showLogs, {
      name: NAME
    })) as ClusterLogsWidget;
    expect(widget).toBeInstanceOf(ClusterLogsWidget);
    expect(added).toEqual([[widget, 'main']]);
    expect(widget.id).toBe(ClusterLogsWidget.idFor(NAME));
    expect(widget.title.label).toBe('Logs 0123456789ab…');
    expect(widget.title.closable).toBe(true);
    expect(widget.model.info?.status).toBe('RUNNING');
    // the toolbar: Refresh, then the process and length choosers
    expect([...widget.toolbar.names()].slice(0, 2)).toEqual([
      'refresh',
      'controls'
    ]);

    const again = await commands.execute(CommandIDs.showLogs, { name: NAME });
    expect(again).toBe(widget);
    expect(added).toHaveLength(1);
    expect(activated).toEqual([widget.id, widget.id]);
    widget.dispose();
    expect(widget.model.isDisposed).toBe(true);
    model.dispose();
  });
});

describe('toggle-all-users', () => {
  it('is hidden from users who are not admins', async () => {
    const { model, commands, saved } = setup(new FakeRelay());
    await model.refresh();
    expect(commands.isVisible(CommandIDs.toggleAllUsers)).toBe(false);
    await commands.execute(CommandIDs.toggleAllUsers);
    expect(model.showAll).toBe(false);
    expect(saved).toEqual([]);
    model.dispose();
  });

  it("switches an admin to every user's clusters and saves the choice", async () => {
    const relay = new FakeRelay();
    relay.config.admin = true;
    const { model, commands, saved } = setup(relay);
    await model.refresh();
    expect(commands.isVisible(CommandIDs.toggleAllUsers)).toBe(true);
    expect(commands.isToggled(CommandIDs.toggleAllUsers)).toBe(false);
    await commands.execute(CommandIDs.toggleAllUsers);
    expect(model.allUsers).toBe(true);
    expect(commands.isToggled(CommandIDs.toggleAllUsers)).toBe(true);
    expect(saved).toEqual([[PLUGIN_ID, 'showAllClusters', true]]);
    await commands.execute(CommandIDs.toggleAllUsers, { value: false });
    expect(model.allUsers).toBe(false);
    model.dispose();
  });
});

/**
 * The hand-off to dask-labextension against a fake of it that behaves like
 * dask-labextension 7: a sidebar widget (id `dask-dashboard-launcher`) with a
 * URL box its populate command fills, a layout command enabled once its
 * background check of the dashboard succeeded, and its settings in a registry.
 * Also the two panel commands that use the hand-off.
 */

import { Notification } from '@jupyterlab/apputils';
import { nullTranslator } from '@jupyterlab/translation';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { DASK_LAB_DASHBOARD_TIMEOUT, addCommands } from '../commands';
import {
  DaskLabHandOff,
  IDaskLabHost,
  daskLabUrl,
  hasDaskLab,
  waitForDaskLabDashboard
} from '../dasklab';
import {
  CommandIDs,
  DASK_LAB_PLUGIN_ID,
  DASK_LAB_SIDEBAR_ID,
  DaskLabCommandIDs
} from '../tokens';

// jsdom may have no fetch; the tests put their own in place
const realFetch = (globalThis as any).fetch;
const URL_A = 'http://hub.example/services/dask-gateway/clusters/a/status';

/** A stand-in for dask-labextension 7 in a JupyterLab shell. */
class FakeDaskLab {
  commands = new CommandRegistry();
  sidebar = new Widget();
  input = document.createElement('input');
  populated: string[] = [];
  /** `browserDashboardCheck` when each URL was populated. */
  checkedFromBrowser: boolean[] = [];
  browserDashboardCheck = false;
  dashboardReachable = false;
  /** The next populate is overwritten by the startup fill of the URL box. */
  clobberNext = 0;
  settingWrites = 0;
  /** How long a settings write takes (ms). */
  writeDelay = 0;
  failWrites = false;

  constructor(options: { loaded?: boolean; area?: 'left' | 'right' } = {}) {
    this.area = options.area ?? 'left';
    this.sidebar.id = DASK_LAB_SIDEBAR_ID;
    const box = document.createElement('div');
    box.className = 'dask-URLInput';
    box.appendChild(this.input);
    this.sidebar.node.appendChild(box);
    if (options.loaded === false) {
      return;
    }
    this.commands.addCommand(DaskLabCommandIDs.populateDashboardUrl, {
      execute: async args => {
        const url = args.url as string;
        this.input.value = url;
        this.populated.push(url);
        this.checkedFromBrowser.push(this.browserDashboardCheck);
        if (this.clobberNext > 0) {
          this.clobberNext--;
          setTimeout(() => (this.input.value = ''), 0);
        }
        return url;
      }
    });
    this.commands.addCommand(DaskLabCommandIDs.launchLayout, {
      isEnabled: () => this.dashboardReachable,
      execute: () => {
        this.launched++;
      }
    });
  }

  host(): IDaskLabHost {
    const widgets = (area?: string) => {
      if (area !== 'left' && area !== 'right') {
        throw new Error(`Invalid area: ${area}`);
      }
      return (area === this.area ? [this.sidebar] : [])[Symbol.iterator]();
    };
    return {
      commands: this.commands,
      shell: { widgets },
      restored: Promise.resolve()
    };
  }

  /** A setting registry holding dask-labextension's settings. */
  registry(): any {
    return {
      load: async (id: string) => {
        expect(id).toBe(DASK_LAB_PLUGIN_ID);
        return {
          get: (key: string) => {
            expect(key).toBe('browserDashboardCheck');
            return { composite: this.browserDashboardCheck };
          },
          set: async (key: string, value: boolean) => {
            const write = ++this.settingWrites;
            await new Promise(resolve => setTimeout(resolve, this.writeDelay));
            if (this.failWrites) {
              throw new Error('read-only settings');
            }
            // like SettingRegistry._save: with a later save queued, this one
            // resolves at once and the later one reports the change
            if (write !== this.settingWrites) {
              return;
            }
            // the registry tells dask-labextension before the write resolves
            this.browserDashboardCheck = value;
          }
        };
      }
    };
  }

  launched = 0;
  readonly area: 'left' | 'right';
}

describe('DaskLabHandOff', () => {
  it('turns on the browser check, then populates the URL box', async () => {
    const lab = new FakeDaskLab();
    const result = await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: true,
      settingRegistry: lab.registry()
    });
    expect(result).toBe('populated');
    expect(lab.input.value).toBe(URL_A);
    expect(daskLabUrl(lab.host())).toBe(URL_A);
    // the URL was checked the browser's way
    expect(lab.checkedFromBrowser).toEqual([true]);
  });

  it('writes the setting only when it is off', async () => {
    const lab = new FakeDaskLab();
    lab.browserDashboardCheck = true;
    await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: true,
      settingRegistry: lab.registry()
    });
    expect(lab.settingWrites).toBe(0);
  });

  it('leaves the setting alone when told to', async () => {
    const lab = new FakeDaskLab();
    await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: false,
      settingRegistry: lab.registry()
    });
    expect(lab.settingWrites).toBe(0);
    expect(lab.populated).toEqual([URL_A]);
  });

  it('still hands the URL over when the setting cannot be written', async () => {
    const lab = new FakeDaskLab();
    lab.failWrites = true;
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
    const result = await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: true,
      settingRegistry: lab.registry()
    });
    warn.mockRestore();
    expect(result).toBe('populated');
    expect(lab.input.value).toBe(URL_A);
  });

  it('reports a JupyterLab without dask-labextension', async () => {
    const lab = new FakeDaskLab({ loaded: false });
    expect(hasDaskLab(lab.commands)).toBe(false);
    const result = await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: true,
      settingRegistry: lab.registry()
    });
    expect(result).toBe('unavailable');
    expect(lab.settingWrites).toBe(0);
  });

  it('waits for the layout to be restored before handing over', async () => {
    const lab = new FakeDaskLab();
    let restore!: () => void;
    const host = {
      ...lab.host(),
      restored: new Promise<void>(resolve => (restore = resolve))
    };
    const pending = new DaskLabHandOff(host).handOff(URL_A, {
      browserCheck: false,
      settingRegistry: null
    });
    await new Promise(resolve => setTimeout(resolve, 10));
    expect(lab.populated).toEqual([]);
    restore();
    expect(await pending).toBe('populated');
    expect(lab.populated).toEqual([URL_A]);
  });

  it('populates again when the URL box was overwritten', async () => {
    const lab = new FakeDaskLab();
    lab.clobberNext = 1;
    const result = await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: false,
      settingRegistry: null
    });
    expect(result).toBe('populated');
    expect(lab.populated).toEqual([URL_A, URL_A]);
    expect(lab.input.value).toBe(URL_A);
  });

  it('gives up after the second try', async () => {
    const lab = new FakeDaskLab();
    lab.clobberNext = 5;
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
    const result = await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: false,
      settingRegistry: null
    });
    warn.mockRestore();
    expect(result).toBe('failed');
    expect(lab.populated).toHaveLength(2);
  });

  it('trusts the command when the URL box cannot be found', async () => {
    const lab = new FakeDaskLab();
    lab.sidebar.id = 'renamed-in-a-later-version';
    const result = await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: false,
      settingRegistry: null
    });
    expect(result).toBe('populated');
    expect(daskLabUrl(lab.host())).toBeUndefined();
  });

  it('finds the sidebar in the right area too', async () => {
    const lab = new FakeDaskLab({ area: 'right' });
    await new DaskLabHandOff(lab.host()).handOff(URL_A, {
      browserCheck: false,
      settingRegistry: null
    });
    expect(daskLabUrl(lab.host())).toBe(URL_A);
  });

  it('hands over one URL at a time', async () => {
    const lab = new FakeDaskLab();
    lab.writeDelay = 20;
    const handOff = new DaskLabHandOff(lab.host());
    const urlB = URL_A.replace('/a/', '/b/');
    const options = { browserCheck: true, settingRegistry: lab.registry() };
    const results = await Promise.all([
      handOff.handOff(URL_A, options),
      handOff.handOff(urlB, options)
    ]);
    expect(results).toEqual(['populated', 'populated']);
    expect(lab.populated).toEqual([URL_A, urlB]);
    // neither URL was populated before the setting was on
    expect(lab.checkedFromBrowser).toEqual([true, true]);
    expect(lab.settingWrites).toBe(1);
    expect(lab.input.value).toBe(urlB);
  });
});

describe('waitForDaskLabDashboard', () => {
  it('resolves once the layout command is enabled', async () => {
    const lab = new FakeDaskLab();
    setTimeout(() => (lab.dashboardReachable = true), 30);
    expect(await waitForDaskLabDashboard(lab.commands, 5000, 5)).toBe(true);
  });

  it('gives up after the timeout', async () => {
    const lab = new FakeDaskLab();
    const started = Date.now();
    expect(await waitForDaskLabDashboard(lab.commands, 50, 5)).toBe(false);
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
  });
});

describe('dashboard commands', () => {
  const trans = nullTranslator.load('jupyterhub_dask_gateway');
  // under the Hub: the dashboard is on the Hub's (this page's) origin
  const hubDashboard = '/services/dask-gateway/clusters/a/status';
  const absolute = new URL(hubDashboard, window.location.href).href;
  // a standalone gateway: its own origin
  const gatewayDashboard = 'http://gateway.example:8000/clusters/a/status';

  function setup(
    lab: FakeDaskLab,
    options: { handOff?: boolean; dashboard?: string } = {}
  ) {
    const host = lab.host();
    const app: any = {
      ...host,
      shell: { ...host.shell, activateById: () => undefined },
      contextMenuHitTest: () => undefined
    };
    const cluster = {
      name: 'a',
      status: 'RUNNING',
      dashboard_url: options.dashboard ?? hubDashboard
    };
    addCommands({
      app,
      model: { cluster: () => cluster, selected: null, clusters: [] } as any,
      sidebar: { id: 'gateway-sidebar' } as any,
      trans,
      notebooks: null,
      settingRegistry: lab.registry(),
      settings: () => ({
        confirmStop: true,
        handOffToDaskLabextension: options.handOff ?? true,
        daskLabextensionBrowserCheck: true
      })
    });
    return lab.commands;
  }

  let open: jest.SpyInstance;
  let events: string[];
  beforeEach(() => {
    events = [];
    open = jest.spyOn(window, 'open').mockImplementation((url?: any) => {
      events.push(`open ${url}`);
      return null;
    });
    (globalThis as any).fetch = jest.fn(async (url: string) => {
      events.push(`login ${url}`);
      return { ok: true } as Response;
    });
  });
  afterEach(() => {
    open.mockRestore();
    (globalThis as any).fetch = realFetch;
  });

  it('open-dashboard logs in once before the tab and dask-labextension use a Hub dashboard', async () => {
    const lab = new FakeDaskLab();
    const commands = setup(lab);
    const populate = lab.commands.execute.bind(lab.commands);
    jest.spyOn(lab.commands, 'execute').mockImplementation((id, args) => {
      if (id === DaskLabCommandIDs.populateDashboardUrl) {
        events.push(`populate ${args!.url}`);
      }
      return populate(id, args);
    });
    const reply = await commands.execute(CommandIDs.openDashboard, {
      name: 'a'
    });
    expect(reply).toEqual({ url: absolute, daskLabextension: 'populated' });
    // blank tab during the click (blocked here, so a plain pop-up after the
    // login), then dask-labextension: never two logins at once
    expect(events.filter(e => !e.startsWith('open '))).toEqual([
      `login ${absolute}`,
      `populate ${absolute}`
    ]);
    expect(events[0]).toBe('open ');
    expect(events.indexOf(`open ${absolute}`)).toBeLessThan(
      events.indexOf(`populate ${absolute}`)
    );
    expect(lab.input.value).toBe(absolute);
    expect(lab.browserDashboardCheck).toBe(true);
  });

  it('open-dashboard opens a dashboard on another origin directly', async () => {
    const lab = new FakeDaskLab();
    const commands = setup(lab, { dashboard: gatewayDashboard });
    const reply = await commands.execute(CommandIDs.openDashboard, {
      name: 'a'
    });
    expect(open).toHaveBeenCalledWith(gatewayDashboard, '_blank', 'noopener');
    expect(globalThis.fetch).not.toHaveBeenCalled();
    expect(reply).toEqual({
      url: gatewayDashboard,
      daskLabextension: 'populated'
    });
    expect(lab.input.value).toBe(gatewayDashboard);
  });

  it('open-dashboard works without dask-labextension', async () => {
    const commands = setup(new FakeDaskLab({ loaded: false }));
    const reply = await commands.execute(CommandIDs.openDashboard, {
      name: 'a'
    });
    expect(open).toHaveBeenCalledWith(absolute, '_blank', 'noopener');
    expect(globalThis.fetch).not.toHaveBeenCalled();
    expect(reply).toEqual({ url: absolute, daskLabextension: 'unavailable' });
  });

  it('open-dashboard hands nothing over when that is turned off', async () => {
    const lab = new FakeDaskLab();
    const commands = setup(lab, { handOff: false });
    const reply = await commands.execute(CommandIDs.openDashboard, {
      name: 'a'
    });
    expect(open).toHaveBeenCalledWith(absolute, '_blank', 'noopener');
    expect(reply).toEqual({ url: absolute, daskLabextension: 'off' });
    expect(lab.populated).toEqual([]);
  });

  it('show-in-dask-labextension waits for a slow dashboard check, then lays out panes', async () => {
    jest.useFakeTimers();
    try {
      const lab = new FakeDaskLab();
      const commands = setup(lab);
      // under load the background check answers after seconds (the panel used
      // to give up after 5 s)
      setTimeout(() => (lab.dashboardReachable = true), 12_000);
      let done: unknown = 'pending';
      void commands
        .execute(CommandIDs.showInDaskLab, { name: 'a' })
        .then(value => (done = value));
      const waiting = () =>
        Notification.manager.notifications.filter(n => n.type === 'in-progress')
          .length;
      await jest.advanceTimersByTimeAsync(11_000);
      expect(done).toBe('pending');
      expect(lab.input.value).toBe(absolute);
      expect(waiting()).toBe(1); // the user is told what is going on
      await jest.advanceTimersByTimeAsync(2_000);
      expect(done).toBe(true);
      expect(lab.launched).toBe(1);
      expect(waiting()).toBe(0);
    } finally {
      jest.useRealTimers();
    }
  });

  it('show-in-dask-labextension gives up on an unreachable dashboard', async () => {
    jest.useFakeTimers();
    try {
      const lab = new FakeDaskLab();
      const commands = setup(lab);
      let done: unknown = 'pending';
      void commands
        .execute(CommandIDs.showInDaskLab, { name: 'a' })
        .then(value => (done = value));
      await jest.advanceTimersByTimeAsync(DASK_LAB_DASHBOARD_TIMEOUT + 1000);
      expect(done).toBe(false);
      expect(lab.launched).toBe(0);
    } finally {
      jest.useRealTimers();
    }
  });
});

/**
 * Handing a cluster's dashboard to dask-labextension (7.x). It exports no
 * token, so the panel drives it through its commands and settings, and reads
 * back what its sidebar shows to check the hand-off took.
 *
 * What dask-labextension does with a URL (its `dask:populate-dashboard-url`):
 * the sidebar's URL box gets the value at once, then a check of the dashboard
 * (`individual-plots.json`, from the browser when its `browserDashboardCheck`
 * setting is on, else through its server extension) runs asynchronously; its
 * `dask:launch-layout` command is enabled once that check succeeded. Once, at
 * startup, it fills the box with its restored or default URL when its settings
 * and state have loaded, which overwrites a URL handed over before then.
 */

import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import {
  DASK_LAB_PLUGIN_ID,
  DASK_LAB_SIDEBAR_ID,
  DaskLabCommandIDs
} from './tokens';

/** What the hand-off needs of the application. */
export interface IDaskLabHost {
  commands: CommandRegistry;
  shell: { widgets(area?: string): IterableIterator<Widget> };
  /** Resolves once every plugin (dask-labextension too) has activated and the layout is restored. */
  restored: Promise<void>;
}

export interface IHandOffOptions {
  /** Turn dask-labextension's browser-side dashboard check on first (when a registry is given). */
  browserCheck: boolean;
  settingRegistry: ISettingRegistry | null;
}

/** How a hand-off went. */
export type HandOffResult =
  /** dask-labextension is not loaded in this JupyterLab: nothing to hand to. */
  | 'unavailable'
  /** Its sidebar holds the URL (or has no URL box we can read, so we trust its command). */
  | 'populated'
  /** Its sidebar showed another URL even after a second try. */
  | 'failed';

/** Whether dask-labextension is loaded (it exports no token, but its commands exist). */
export function hasDaskLab(commands: CommandRegistry): boolean {
  return commands.hasCommand(DaskLabCommandIDs.populateDashboardUrl);
}

/** dask-labextension's sidebar, wherever the user put it, or undefined. */
export function daskLabSidebar(host: IDaskLabHost): Widget | undefined {
  for (const area of ['left', 'right']) {
    let widgets: IterableIterator<Widget>;
    try {
      widgets = host.shell.widgets(area);
    } catch {
      continue; // a shell without this area
    }
    for (const widget of widgets) {
      if (widget.id === DASK_LAB_SIDEBAR_ID) {
        return widget;
      }
    }
  }
  return undefined;
}

/**
 * The URL in dask-labextension's URL box, or undefined when there is no box to
 * read. The widget's node exists whether or not its sidebar is open.
 */
export function daskLabUrl(host: IDaskLabHost): string | undefined {
  const input = daskLabSidebar(host)?.node.querySelector<HTMLInputElement>(
    '.dask-URLInput input'
  );
  return input ? input.value : undefined;
}

/** Hands dashboards to dask-labextension one at a time. */
export class DaskLabHandOff {
  constructor(host: IDaskLabHost) {
    this._host = host;
  }

  /**
   * Point dask-labextension's dashboard panes at `url` (absolute).
   *
   * Hand-offs are serialised: two settings writes in flight let the first
   * resolve before the registry reports the change, so its URL would be
   * checked the old way.
   */
  handOff(url: string, options: IHandOffOptions): Promise<HandOffResult> {
    const next = this._queue.then(() => this._handOff(url, options));
    this._queue = next.catch(() => undefined);
    return next;
  }

  private async _handOff(
    url: string,
    options: IHandOffOptions
  ): Promise<HandOffResult> {
    const { commands } = this._host;
    // every plugin has activated by then, and dask-labextension has (almost
    // always) filled its URL box from its own state, which would overwrite ours
    await this._host.restored;
    if (!hasDaskLab(commands)) {
      return 'unavailable';
    }
    if (options.browserCheck && options.settingRegistry) {
      // Gateway dashboards sit behind the Hub's login cookie, which only the
      // browser has; dask-labextension's default server-side check would fail.
      // The write resolves after the registry told dask-labextension.
      try {
        const settings = await options.settingRegistry.load(DASK_LAB_PLUGIN_ID);
        if (settings.get('browserDashboardCheck').composite !== true) {
          await settings.set('browserDashboardCheck', true);
        }
      } catch (error) {
        console.warn('Cannot update dask-labextension settings', error);
      }
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      await commands.execute(DaskLabCommandIDs.populateDashboardUrl, { url });
      // let a pending startup fill of its URL box land before reading it back
      await new Promise(resolve => setTimeout(resolve, 0));
      const shown = daskLabUrl(this._host);
      if (shown === undefined || shown === url) {
        return 'populated';
      }
    }
    console.warn(
      `dask-labextension shows ${daskLabUrl(this._host)} instead of ${url}`
    );
    return 'failed';
  }

  private _host: IDaskLabHost;
  private _queue: Promise<unknown> = Promise.resolve();
}

/**
 * Wait until dask-labextension has reached the dashboard it was given (its
 * layout command is enabled then). Its check runs in the background and, under
 * load or behind a slow proxy, can take seconds; it retries a failed check
 * with a backoff (4 s, 8 s, 16 s). Resolves false after `timeout` ms.
 */
export async function waitForDaskLabDashboard(
  commands: CommandRegistry,
  timeout: number,
  interval = 250
): Promise<boolean> {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (
      commands.hasCommand(DaskLabCommandIDs.launchLayout) &&
      commands.isEnabled(DaskLabCommandIDs.launchLayout)
    ) {
      return true;
    }
    if (Date.now() >= deadline) {
      return false;
    }
    await new Promise(resolve => setTimeout(resolve, interval));
  }
}

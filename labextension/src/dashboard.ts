/**
 * Opening a cluster's dashboard in a browser tab.
 *
 * Under JupyterHub the dashboard is on the Hub's origin, behind the gateway
 * service's Hub OAuth login: the first request without the service's cookie is
 * sent through the Hub and back to the service's `oauth_callback`, which checks
 * an OAuth state cookie. JupyterHub keeps one such cookie per service, so two
 * logins started at the same moment (the new tab, and dask-labextension
 * checking the same dashboard from the browser) overwrite each other's state
 * and fail with "oauth state does not match". So when both will happen, one
 * request logs the browser in first and the tab follows.
 */

/** Whether `url` is on this page's origin (so it shares the Hub's cookies). */
export function isSameOrigin(url: string): boolean {
  return new URL(url, window.location.href).origin === window.location.origin;
}

/**
 * Make one request to the dashboard, following the login's redirects, so the
 * browser holds the service's cookie afterwards. Never fails; gives up after
 * `timeout` ms. Resolves whether the dashboard answered with success.
 */
export async function logInToDashboard(
  url: string,
  timeout = 15_000
): Promise<boolean> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeout);
  try {
    const response = await fetch(url, {
      credentials: 'same-origin',
      signal: controller.signal
    });
    return response.ok;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Open `url` in a new tab. Call it during the click (before any `await`):
 * browsers only allow pop-ups then. With `logInFirst`, the tab opens at once
 * but goes to the dashboard only after {@link logInToDashboard} returned.
 */
export async function openDashboardTab(
  url: string,
  logInFirst: boolean
): Promise<void> {
  if (!logInFirst) {
    window.open(url, '_blank', 'noopener');
    return;
  }
  const tab = window.open('', '_blank');
  if (tab) {
    tab.opener = null; // what 'noopener' would have done
    try {
      tab.document.title = 'Dask dashboard';
      tab.document.body.textContent = 'Opening the Dask dashboard…';
    } catch {
      // not ours to write into; it only shows a blank page meanwhile
    }
  }
  await logInToDashboard(url);
  if (tab && !tab.closed) {
    tab.location.href = url;
  } else if (!tab) {
    // the blank tab was blocked; this may still be allowed
    window.open(url, '_blank', 'noopener');
  }
}
